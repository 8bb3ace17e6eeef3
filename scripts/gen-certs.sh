#!/usr/bin/env bash
# Makes a local CA and certificates for GridMesh nodes, for tests, the compose setup and trying
# TLS out. Not for production: keep a real CA's key offline.
#
#   scripts/gen-certs.sh OUT_DIR [NAME...]      # default names: n0 n1 n2 client
#
# Writes OUT_DIR/ca.pem, ca.key and, per NAME, NAME.pem + NAME.key (EC P-256, PKCS#8). Every
# certificate is valid for DNS:NAME, DNS:localhost, IP:127.0.0.1 and IP:::1, for both server
# and client authentication, so one certificate serves a node's gRPC port and its cluster port
# (where peers authenticate each other with the CA). Keys are created mode 0600.
#
#   [tls]
#   grpc_cert_file = "OUT_DIR/n0.pem"      grpc_key_file = "OUT_DIR/n0.key"
#   cluster_cert_file = "OUT_DIR/n0.pem"   cluster_key_file = "OUT_DIR/n0.key"
#   cluster_ca_file = "OUT_DIR/ca.pem"
#   # clients: gridmesh --ca-file OUT_DIR/ca.pem ...
set -euo pipefail

out=${1:?usage: gen-certs.sh OUT_DIR [NAME...]}
shift
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(n0 n1 n2 client)
days=${GRIDMESH_CERT_DAYS:-825}
command -v openssl >/dev/null || { echo "gen-certs.sh needs openssl" >&2; exit 1; }

mkdir -p "$out"
umask 077
if [ ! -f "$out/ca.pem" ]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$out/ca.key" -sha256 -days "$days" -subj "/CN=GridMesh test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.pem"
fi

for name in "${names[@]}"; do
  ext=$(mktemp)
  cat > "$ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:${name},DNS:localhost,IP:127.0.0.1,IP:::1
EXT
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out/$name.key" 2>/dev/null
  openssl req -new -key "$out/$name.key" -subj "/CN=$name" -out "$out/$name.csr"
  openssl x509 -req -in "$out/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" \
    -CAcreateserial -days "$days" -sha256 -extfile "$ext" -out "$out/$name.pem" 2>/dev/null
  rm -f "$out/$name.csr" "$ext"
done
chmod 0644 "$out"/*.pem
echo "wrote CA and certificates for ${names[*]} to $out"
