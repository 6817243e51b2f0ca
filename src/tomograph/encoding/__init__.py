"""Wire formats: each module encodes spans to one format and decodes it back.

The modules here are pure functions: no I/O, no configuration, no threads. Reporting encodes
with them; the collector decodes with them and never imports reporting.
"""
