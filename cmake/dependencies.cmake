# SPDX-License-Identifier: Apache-2.0
# Every external dependency, found once. Debian 12 package names are in tools/qf.
find_package(Boost 1.74 REQUIRED)
find_package(Protobuf 3.21 REQUIRED)
find_package(date CONFIG REQUIRED)
find_package(fmt CONFIG REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(Threads REQUIRED)
find_package(OpenSSL REQUIRED)
# E-mail alerts submit over SMTP with libcurl (Debian: libcurl4-openssl-dev).
find_package(CURL 7.80 REQUIRED)
find_package(SQLite3 REQUIRED)
# The coordinator's retention archive (gzip): Debian zlib1g-dev.
find_package(ZLIB REQUIRED)
find_package(yaml-cpp CONFIG REQUIRED)
# QUIC (agent protocol): ngtcp2 0.12 with its GnuTLS crypto backend; no CMake config files.
find_package(PkgConfig REQUIRED)
pkg_check_modules(QUIC REQUIRED IMPORTED_TARGET libngtcp2>=0.12 libngtcp2_crypto_gnutls>=0.12 gnutls)
# PostgreSQL client (the coordinator's Store on PostgreSQL): libpq has no CMake config here.
pkg_check_modules(PQ REQUIRED IMPORTED_TARGET libpq)
