"""Conformational landscapes: dimension reduction, grouping, group reconstructions and animations."""
