#!/usr/bin/env bash
# Certificates for TLS between the containers of docker-compose.yml: a CA of
# this installation and server certificates for `nats` and `postgres`
# (their names on the compose network, plus localhost and 127.0.0.1 for the
# operator's `etl` on the host).
#
#   deploy/make-certs.sh [dir]          # default: deploy/tls
#
# Writes <dir>/ca.crt (what clients trust), <dir>/ca.key (keep it offline
# after use, or delete it: it is needed only to issue more certificates),
# <dir>/nats.{crt,key} and <dir>/postgres.{crt,key}. Existing files are kept
# (run again after deleting a certificate to renew it). Nothing here is
# committed: deploy/tls/ is in .gitignore. With your own CA (a hospital's
# PKI), put its files under the same names instead of running this.
set -euo pipefail

dir=${1:-"$(cd "$(dirname "$0")" && pwd)/tls"}
days=${CERT_DAYS:-825}
mkdir -p "$dir"
cd "$dir"
umask 077

if [[ ! -f ca.crt ]]; then
    openssl req -x509 -new -nodes -newkey rsa:3072 -sha256 -days 3650 \
        -subj "/CN=ETL bus CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout ca.key -out ca.crt 2>/dev/null
    echo "made $dir/ca.crt"
fi

# server <name> <subjectAltName>
server() {
    local name=$1 san=$2
    [[ -f $name.crt ]] && return 0
    openssl req -new -nodes -newkey rsa:2048 -subj "/CN=$name" \
        -keyout "$name.key" -out "$name.csr" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -days "$days" -sha256 -out "$name.crt" \
        -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$san") \
        2>/dev/null
    rm -f "$name.csr"
    echo "made $dir/$name.crt ($san)"
}

server nats "DNS:nats,DNS:localhost,IP:127.0.0.1"
server postgres "DNS:postgres,DNS:localhost,IP:127.0.0.1"

# The certificates are public; the containers' users must read them. The
# keys stay readable by this user only (the containers start as root and
# read them before dropping privileges).
chmod 0644 ca.crt nats.crt postgres.crt
chmod 0600 ca.key nats.key postgres.key
