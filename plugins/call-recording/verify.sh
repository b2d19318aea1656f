#!/bin/sh
# Checks a call recording's evidence with standard tools only, without the
# callhost: the files against <name>_hash.txt, the hash file against its
# signature <name>_hash.txt.SHA256withRSA.sig, and the certificate.
#
# Usage: ./verify.sh <recording name> [certificate.pem]
# Run it in the directory holding the recording's files; the certificate
# defaults to certificate.pem there. Prints one line per check ("PASS ..."
# or "FAIL ..."); exits 0 if all passed, 1 if any failed, 2 on bad usage or
# missing tools. Needs sha256sum (or shasum) and openssl.

set -u

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ -z "$1" ]; then
    echo "usage: $0 <recording name> [certificate.pem]" >&2
    exit 2
fi
name=$1
certificate=${2:-certificate.pem}
hash_file="${name}_hash.txt"
signature_file="${hash_file}.SHA256withRSA.sig"

if command -v sha256sum >/dev/null 2>&1; then
    check_sums() { sha256sum -c "$1"; }
elif command -v shasum >/dev/null 2>&1; then
    check_sums() { shasum -a 256 -c "$1"; }
else
    echo "$0: needs sha256sum or shasum" >&2
    exit 2
fi
if ! command -v openssl >/dev/null 2>&1; then
    echo "$0: needs openssl" >&2
    exit 2
fi

work=$(mktemp -d) || exit 2
trap 'rm -rf "$work"' EXIT
trap 'exit 2' HUP INT TERM

failed=0
pass() { printf 'PASS %s: %s\n' "$1" "$2"; }
fail() { printf 'FAIL %s: %s\n' "$1" "$2"; failed=1; }
# The first lines of a tool's output, on one line.
summary() { head -n 5 "$1" | tr '\n' ' ' | sed 's/ *$//'; }

# checksums: every listed file matches, and no file of the recording is
# left out of the list (an added file would otherwise go unnoticed).
if [ ! -f "$hash_file" ]; then
    fail checksums "$hash_file not found"
elif cut -c67- "$hash_file" | grep -q '/'; then
    fail checksums "$hash_file names a file outside this directory"
elif ! check_sums "$hash_file" >"$work/sums.out" 2>&1; then
    grep -v ': OK$' "$work/sums.out" >"$work/sums.failed"
    fail checksums "$(summary "$work/sums.failed")"
else
    # Names start after "<64 hex>  " (or "<64 hex> *").
    cut -c67- "$hash_file" >"$work/listed"
    unlisted=""
    for file in "$name"*; do
        [ -e "$file" ] || continue
        case $file in
            "$hash_file" | "$signature_file") continue ;;
        esac
        grep -Fxq -- "$file" "$work/listed" || unlisted="$unlisted $file"
    done
    if [ -n "$unlisted" ]; then
        fail checksums "not listed in $hash_file:$unlisted"
    else
        pass checksums "$(wc -l <"$hash_file" | tr -d ' ') files match $hash_file"
    fi
fi

# signature: the hash file is signed by the certificate's key.
if [ ! -f "$signature_file" ]; then
    fail signature "$signature_file not found"
elif [ ! -f "$certificate" ]; then
    fail signature "certificate $certificate not found"
elif ! openssl base64 -d -A -in "$signature_file" -out "$work/signature.bin" 2>"$work/err"; then
    fail signature "$signature_file is not base64: $(summary "$work/err")"
elif ! openssl x509 -in "$certificate" -pubkey -noout >"$work/public.pem" 2>"$work/err"; then
    fail signature "$certificate is not a PEM certificate: $(summary "$work/err")"
elif [ ! -f "$hash_file" ]; then
    fail signature "$hash_file not found"
elif openssl dgst -sha256 -verify "$work/public.pem" -signature "$work/signature.bin" \
    "$hash_file" >"$work/dgst.out" 2>&1; then
    pass signature "$hash_file is signed by the key of $certificate"
else
    fail signature "$hash_file is not signed by the key of $certificate: $(summary "$work/dgst.out")"
fi

# certificate: parses, not expired; its fingerprint, to compare with the
# one the installation published.
if [ ! -f "$certificate" ]; then
    fail certificate "$certificate not found"
elif ! openssl x509 -in "$certificate" -noout -subject -enddate -fingerprint -sha256 \
    >"$work/certificate.out" 2>&1; then
    fail certificate "$certificate does not parse: $(summary "$work/certificate.out")"
elif ! openssl x509 -in "$certificate" -noout -checkend 0 >/dev/null 2>&1; then
    fail certificate "$certificate has expired: $(summary "$work/certificate.out")"
else
    pass certificate "$(summary "$work/certificate.out")"
fi

exit "$failed"
