"""The local fleet: a real control plane built from Go modules, kwok nodes, and the e2e harness."""
