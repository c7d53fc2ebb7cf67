//! `pipeline metrics import DIR`: converting the older metric layout into spec files.
//! (Being written.)
