"""CryoTRANS: neural-ODE morphing of a high-resolution map into a low-resolution target."""
