"""CURVE security for group ports (re-exported from :mod:`ctlwire._curve`, where the
code shared with ROC lives)."""
from ctlwire._curve import ZAP_DOMAIN, CurveSecurity

__all__ = ["CurveSecurity", "ZAP_DOMAIN"]
