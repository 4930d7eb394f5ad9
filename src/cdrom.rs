//! Finding the context CD: the ISO9660 volume labelled `CONTEXT` among block devices (label read
//! from the primary volume descriptor), mounted read-only with retries. Issue #2.
