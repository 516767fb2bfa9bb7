#!/usr/bin/env bash
# The main job: start a local mediator on loopback and pair two peers through it, end to end.
# Extra arguments go to 'p2psc demo' (see 'p2psc demo --help').
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
exec "$VENV/bin/p2psc" demo "$@"
