package loader

// Test helpers of package loader that the external tests (package
// loader_test, which may import loader/synth) use too.
var RunEpoch = runEpoch
