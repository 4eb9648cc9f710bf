//! Architecture back-ends: AArch64 EL2, ARMv7 HYP, host fake.
#![no_std]
