#ifndef KEYLINE_CLIBCRYPTO_SHIM_H
#define KEYLINE_CLIBCRYPTO_SHIM_H
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/pkcs12.h>
#include <openssl/crypto.h>
#endif
