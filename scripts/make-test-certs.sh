#!/usr/bin/env bash
# Makes a throw-away certificate authority and certificates for trying
# TLS and mutual TLS locally (and for the tests). Not for production: the
# CA key sits next to the certificates, unencrypted.
#
#   bash scripts/make-test-certs.sh [DIR]      (default: data/certs)
#
# DIR/ca.pem              the CA certificate (trust it: --tls-client-ca, --auth-tls-ca, orgctl --ca-cert)
# DIR/server.pem, .key    for both servers: valid for localhost, 127.0.0.1 and ::1
# DIR/client.pem, .key    a client certificate signed by the CA (mutual TLS)
# DIR/rogue-ca.pem, DIR/rogue-client.pem, .key
#                         a client certificate from another CA: servers must refuse it
set -euo pipefail

dir=${1:-data/certs}
mkdir -p "$dir"
cd "$dir"
days=30

# make_ca NAME: NAME.pem and NAME.key, a self-signed CA.
make_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1.key" -out "$1.pem" -days "$days" -subj "/CN=orgauth $1" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# make_leaf NAME CA EXTENSIONS: NAME.pem and NAME.key signed by CA.
make_leaf() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1.key" -out "$1.csr" -subj "/CN=orgauth $1" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial \
    -out "$1.pem" -days "$days" -extfile "$1.ext" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

make_ca ca
make_ca rogue-ca
make_leaf server ca "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth
basicConstraints=critical,CA:FALSE"
make_leaf client ca "extendedKeyUsage=clientAuth
basicConstraints=critical,CA:FALSE"
make_leaf rogue-client rogue-ca "extendedKeyUsage=clientAuth
basicConstraints=critical,CA:FALSE"
rm -f ./*.srl
chmod 600 ./*.key
echo "test certificates in $PWD (valid $days days)"
