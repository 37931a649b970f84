#!/usr/bin/env python3
"""Independent peer for narinfo's Guix signatures: libgcrypt itself, through ctypes.

  gcrypt.py verify SIGFILE MESSAGEFILE   exit 0 iff libgcrypt verifies the signature
                                         s-expression over SHA-256(message)
  gcrypt.py sign MESSAGEFILE             generate a key as Guix does, sign, print
                                         the private key text, a line "--", and the
                                         signature s-expression text
"""
import ctypes, ctypes.util, hashlib, sys

lib = ctypes.CDLL(ctypes.util.find_library("gcrypt") or "libgcrypt.so.20")
lib.gcry_check_version.restype = ctypes.c_char_p
lib.gcry_check_version(None)
lib.gcry_sexp_find_token.restype = ctypes.c_void_p
lib.gcry_sexp_find_token.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
lib.gcry_sexp_sprint.restype = ctypes.c_size_t
lib.gcry_sexp_sprint.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
lib.gcry_pk_verify.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
lib.gcry_pk_sign.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_void_p]
lib.gcry_pk_genkey.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p]
ADVANCED = 3


def sexp(text):
    s = ctypes.c_void_p()
    off = ctypes.c_size_t()
    err = lib.gcry_sexp_sscan(ctypes.byref(s), ctypes.byref(off), text, ctypes.c_size_t(len(text)))
    if err:
        sys.exit("gcry_sexp_sscan: error %d at %d" % (err, off.value))
    return s


def find(s, token):
    r = lib.gcry_sexp_find_token(s, token, 0)
    if not r:
        sys.exit("no %s" % token.decode())
    return ctypes.c_void_p(r)


def sprint(s):
    buf = ctypes.create_string_buffer(8192)
    n = lib.gcry_sexp_sprint(s, ADVANCED, buf, 8192)
    return buf.raw[:n]


def data_sexp(message):
    digest = hashlib.sha256(message).hexdigest().upper().encode()
    return sexp(b"(data (flags rfc6979) (hash sha256 #" + digest + b"#))")


if sys.argv[1] == "verify":
    sig = sexp(open(sys.argv[2], "rb").read())
    message = open(sys.argv[3], "rb").read()
    err = lib.gcry_pk_verify(find(sig, b"sig-val"), data_sexp(message), find(sig, b"public-key"))
    sys.exit(0 if err == 0 else 1)
elif sys.argv[1] == "sign":
    message = open(sys.argv[2], "rb").read()
    key = ctypes.c_void_p()
    if lib.gcry_pk_genkey(ctypes.byref(key), sexp(b"(genkey (ecdsa (curve Ed25519) (flags rfc6979)))")):
        sys.exit("genkey failed")
    priv, pub = find(key, b"private-key"), find(key, b"public-key")
    data = data_sexp(message)
    sigval = ctypes.c_void_p()
    if lib.gcry_pk_sign(ctypes.byref(sigval), data, priv):
        sys.exit("sign failed")
    sig = sexp(b"(signature " + sprint(data) + sprint(sigval) + sprint(pub) + b")")
    sys.stdout.buffer.write(sprint(priv) + b"--\n" + sprint(sig))
