"""SBT: the audited API through which five agencies share ASN neutrality-violation records."""

__version__ = "0.1.0"
