//! ringway benchmark helpers.
