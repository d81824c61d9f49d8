"""cotbench: when does chain-of-thought help?"""
__version__ = "0.1.0"
