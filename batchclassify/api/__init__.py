"""Talking to the API over HTTP: the classification client, the fleet of servers, retry rules,
and keeping the API key out of any text shown.
"""
