"""The small core every stage builds on: config, data, models, runs, metrics, bounds, axolotl launch.

Stages (check, smoke, train, merge, evaluate, runs) import from here and never from each other.
"""
