#!/bin/sh
# SPDX-License-Identifier: MIT
# Run by make check when configure did not find Check (pkg-config check).
echo "Check (pkg-config module 'check') was not found by configure:" >&2
echo "install the 'check' package (check-devel, libcheck) and re-run configure." >&2
exit 99
