"""ctlwire.dc"""
