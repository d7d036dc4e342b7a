"""dmvpn-lab: a lab harness for GDOI-protected DMVPN on Linux."""

__version__ = "0.1.0"
