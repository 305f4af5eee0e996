"""Plots of edgeinf results (matplotlib, imported lazily by each function)."""
