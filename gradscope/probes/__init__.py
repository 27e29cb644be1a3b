"""The instruments: each module computes one kind of evidence and the findings it supports."""
