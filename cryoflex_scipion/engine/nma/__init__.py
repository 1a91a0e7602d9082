"""Normal mode analysis (elastic networks: ANM, RTB) and pseudoatomic models of maps."""
