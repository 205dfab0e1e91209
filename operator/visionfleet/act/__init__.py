"""Executes planned actions: server-side apply, one status write per pass, Events."""
