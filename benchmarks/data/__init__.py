"""Preparing datasets: sources imported or generated, features extracted by a named CNN trunk."""
