"""Inputs: the sources walked (folders, manifests, object storage), each image read and encoded."""
