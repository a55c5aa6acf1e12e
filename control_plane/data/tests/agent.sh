#!/bin/sh
# The vendor agent must start on this machine.
set -eu
/opt/factory/bin/legacy-agent
