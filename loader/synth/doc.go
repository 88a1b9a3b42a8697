// Package synth generates synthetic datasets with a planted, known signal for
// any feature schema, so that training can be checked against the best
// achievable result rather than against coin flips.
//
// # The planted signal
//
// Categorical ids are drawn from a Zipf distribution over each domain (the
// most popular ranks are spread over the id range by a hashed affine
// permutation). Every (domain, id) pair has a hidden latent vector of
// Config.LatentDim components derived from a hash of (seed, domain name, id),
// so no table of cardinality x dimension floats is ever stored. A continuous
// input x contributes x times a hashed direction vector of the same size.
// List features contribute the mean of their elements' vectors, the way the
// model's mean combiner sees them.
//
// From these per-feature vectors v_g the generator builds T+1 scores per row
// (one shared, one per target). Each score is a first-order term
// sum_g <a_g, v_g> plus a factorization-machine style pairwise term
// sum_{g<h} <P_g v_g, diag(c) P_h v_h> (user x item, user x category, ...),
// with weights a_g and c per score and projections P_g per feature, all
// derived from the seed: a model that combines embeddings (an MLP, MMoE,
// ...) can learn it, a constant cannot, and a linear model on the latents
// misses most of the pairwise part. The scores are centred and whitened on a
// calibration sample, so they have unit variance and are mutually
// uncorrelated; task t then uses
//
//	f_t = sqrt(rho) * shared + sqrt(1-rho) * specific_t      (rho = TaskCorrelation)
//
// so that the correlation of two tasks' scores is rho. A binary target's true
// logit is bias_t + SignalScale * f_t with bias_t solved (safeguarded Newton
// on the calibration sample) so that the mean true probability equals the
// target's base rate; labels are Bernoulli draws. A regression target with a domain [lo, hi] has the mean
// lo + (hi-lo)*sigmoid(SignalScale * f_t), plus Gaussian noise of standard
// deviation RegressionNoise*(hi-lo), clipped to the domain (and rounded when
// the target has an integer dtype). Its best predictor E[y | inputs] is known
// in closed form and reported with every row, so the oracle RMSE is exact.
//
// Features that a model does not use as inputs (no categorical or continuous
// tag) are generated but carry no signal.
//
// # Reproducibility and streaming
//
// Every row is generated from its absolute index and the seed alone, and each
// column of a row from its own random stream. Any range of rows can therefore
// be generated independently and in parallel, WriteDataset streams row groups
// with memory independent of the number of rows, and Generator.Batch returns
// exactly the rows WriteDataset writes for the same configuration. The
// hidden world (latents, weights, biases) depends on the seed and the schema
// only, so Config.StartRow selects disjoint train and evaluation rows of the
// same world.
//
// # The MMoE paper's generator
//
// MMoEPaper implements the synthetic regression data of Ma et al., "Modeling
// Task Relationships in Multi-task Learning with Multi-gate
// Mixture-of-Experts" (KDD 2018), section 4, where the correlation of two
// regression tasks is set by the cosine of their weight vectors.
package synth
