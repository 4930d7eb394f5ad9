"""tools/size_by_crate.py: which crate a symbol is charged to (`python3 -m unittest
tools/test_size_by_crate.py`; `make size` runs it first)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import size_by_crate as sbc  # noqa: E402


class CrateOf(unittest.TestCase):
    def test_paths_and_impls(self):
        cases = {
            "rustls::conn::ConnectionCommon<T>::complete_io": "rustls",
            "<rustls::msgs::handshake::ServerExtensions as rustls::msgs::codec::Codec>::read": "rustls",
            # A std type implementing our trait is ours; our type implementing a std trait too.
            "<u8 as flower_init::http::Thing>::f": "flower_init",
            "<flower_init::http::HttpError as core::fmt::Display>::fmt": "flower_init",
            "<&T as core::fmt::Debug>::fmt": "core",
            "<[alloc::string::String]>::join": "alloc",
            "core::ptr::drop_in_place::<flower_init::config::Config>": "core",
            "ring_core_0_17_14__chacha20_poly1305_open_avx2": "ring (C/asm)",
            "ecp_nistz256_precomputed": "ring (C/asm)",
            "memcpy": "musl libc (C)",
            "libunwind::CFI_Parser<A>::parseCIE(A&, unsigned long)": "libunwind",
        }
        for name, crate in cases.items():
            self.assertEqual(sbc.crate_of(name), crate, name)

    def test_v0_crate_roots_carry_their_disambiguator(self):
        raw = "_RNvMs_NtCs4fqI2P2rA04_6rustls12common_stateNtB4_11CommonState16send_fatal_alert"
        self.assertEqual(sbc.v0_crates(raw)[0], ("rustls", "4fqI2P2rA04"))


if __name__ == "__main__":
    unittest.main()
