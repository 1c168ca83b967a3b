"""The protocol designer's lab: replay stored epochs, fork a chain with changed parameters, sweep populations."""
