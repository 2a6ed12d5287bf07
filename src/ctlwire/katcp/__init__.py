"""ctlwire.katcp"""
