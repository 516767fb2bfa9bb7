"""Conformance harness: checks a third-party mediator against spec/mediator.md."""
