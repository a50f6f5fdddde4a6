"""Shipped expression models: a registry of records, each with its weights in this folder."""
