//! The fuzz corpus as a regression test: every input in `fuzz/corpus/` (and every spec
//! in `pipelines/`) goes through its target once, and none breaks an invariant.

#[test]
fn every_spec_in_the_corpus_keeps_the_front_end_invariants() {
    let broken = streamc_fuzz::replay("spec");
    assert!(broken.is_empty(), "{broken:#?}");
    assert!(streamc_fuzz::seeds("spec").len() >= 50);
}

#[test]
fn every_record_in_the_corpus_keeps_the_decoder_invariants() {
    let broken = streamc_fuzz::replay("decoder");
    assert!(broken.is_empty(), "{broken:#?}");
    assert!(streamc_fuzz::seeds("decoder").len() >= 20);
}
