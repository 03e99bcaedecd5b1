#!/bin/sh
# Compose's first one-shot service (deploy/docker-compose.yml): refuses to
# let the bus start while a password is still an example value of
# deploy/.env.example (`change-me-…`). Names the variables, never a value.
# Compose itself refuses unset or empty ones (`${VAR:?…}`).
set -eu
bad=$(env | sed -n 's/^\([A-Za-z0-9_]*PASSWORD\)=.*change-me.*/\1/p' | sort | tr '\n' ' ')
if [ -n "$bad" ]; then
    echo "refusing to start: still the example value of deploy/.env.example in: $bad" >&2
    echo "set real passwords in deploy/.env (e.g. openssl rand -base64 24)" >&2
    exit 1
fi
echo "passwords: none is an example value"
