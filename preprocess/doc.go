// Package preprocess turns raw tabular data (CSV or Parquet) into the
// Parquet + schema.pbtxt datasets that mtlrank trains on, with
// NVTabular-style fitted ops: Categorify, HashBucket, FillMissing, Clip,
// LogOp and Normalize. The fitted state is a Workflow, saved as JSON and
// applied unchanged to new data (eval sets, data to score).
//
// # Entry points
//
// Run does what Merlin's quick-start preprocessing script does: fit on the
// training inputs, write outDir/train and outDir/eval (the eval inputs, or a
// split of the training inputs) and outDir/workflow.json. Fit, Transform,
// Workflow.Save and LoadWorkflow are the parts, for callers that need them
// separately. A Spec's fields mirror the script's flags:
//
//	--input_data_format            InputFormat
//	--csv_sep, --csv_na_values     CSVSep, CSVNAValues
//	--categorical_features         Categorical
//	--continuous_features          Continuous
//	--continuous_features_fillna   ContinuousFillNA ("median", a number; also "mean")
//	--binary_classif_targets       BinaryTargets
//	--regression_targets           RegressionTargets
//	--user_features, --item_features           UserFeatures, ItemFeatures
//	--user_id_feature, --item_id_feature       UserID, ItemID
//	--categ_min_freq_capping       CategMinFreq
//	--dataset_split_strategy       SplitStrategy ("random", "random_by_user",
//	                               "temporal"; also "by_user_holdout")
//	--random_split_eval_perc       EvalPerc
//	--dataset_split_temporal_timestamp         SplitTemporalTimestamp
//	--timestamp_feature, --session_id_feature  TimestampFeature, SessionIDFeature
//	--filter_query                 FilterQuery (comparisons only, see query.go)
//	--min_user_freq, --max_user_freq           MinUserFreq, MaxUserFreq
//	--min_item_freq, --max_item_freq           MinItemFreq, MaxItemFreq
//	--num_max_rounds_filtering     FilterRounds
//
// The row filters (FilterQuery, then the frequency bounds in alternating
// rounds) apply to the training inputs before the split and the fit, as in
// the script, which also applies FilterQuery to the eval and test inputs.
//
// Additions: CSVHeader and CSVColumnNames (headerless files such as UCI
// Adult), BinaryTargetMap and TargetSource (string labels and derived
// targets), HashBuckets, Normalize, LogContinuous, Clip, Seed, ChunkRows.
//
// # Inputs
//
// Each input is a file, a directory or a glob pattern; directories give
// their Parquet files as loader.ListFiles lists them for training (*.parquet
// and *.pq, no hidden or "_" files, not recursive), or, for CSV, every
// visible regular file except schema and workflow files, in name order. Files ending in .parquet or .pq
// are Parquet unless InputFormat says otherwise; .gz CSV files are
// decompressed.
//
// CSV: one separator character (", " means "," since fields are trimmed),
// RFC 4180 quoting, a header row or given column names, a UTF-8 byte order
// mark is skipped, blank lines are skipped. Spaces around every field are
// trimmed, quoted fields included. An empty field and the CSVNAValues are
// null. Every record must have as many fields as the header.
//
// Parquet: flat columns of string, binary, signed and unsigned integer,
// float, bool, date and timestamp types, plain or dictionary-encoded, with
// nulls; float NaN is null.
//
// Data is read in chunks of Spec.ChunkRows rows (64Ki by default) by a
// reader goroutine one chunk ahead of the processing, so memory is bounded
// by the vocabularies and a few chunks, never by the number of rows.
//
// # Ops
//
// Categorify (categorical columns): id 0 is null, id 1 is out of
// vocabulary, which includes values seen fewer than CategMinFreq times while
// fitting; the vocabulary takes ids 2, 3, ... in descending order of
// frequency, ties broken by value: values that parse as integers first, in
// numeric order (then bytewise for equal numbers, "007" before "7"), then
// the others bytewise. The order, hence every id, is reproducible. Values
// are compared in their canonical string form: strings as they are
// (trimmed, for CSV), integers in decimal, floats in Go's shortest 'g'
// format, bools as 0/1. The output int_domain is {min 0, max vocab+1,
// is_categorical, name = column}.
//
// HashBucket (columns in HashBuckets, for huge vocabularies): id = 2 +
// FNV-1a-64(canonical value) mod buckets, null 0, no vocabulary kept
// (int_domain max = buckets+1).
//
// Continuous columns go through FillMissing -> Clip -> LogOp -> Normalize,
// each step optional. FillMissing replaces nulls with a constant, or the
// mean or the median of the non-null values of the column as read (before
// clipping). The median is exact, found in bounded memory: a column with at
// most 2^18 non-null values keeps them during the fit pass and selects the
// middle ranks directly; a larger one is histogrammed on the top 16 bits of
// an order-preserving 64-bit key of each value, and each further pass over
// that column either collects the values of the bucket holding the middle
// rank (when it holds at most 2^20 values) or histograms the next 16 bits
// inside it, so at most three more passes are needed, usually one. An even
// count takes the mean of the two middle values. Clip bounds values to [min, max] (either may be infinite). LogOp
// is log1p(max(x, 0)). Normalize z-scores with the mean and the sample
// (n-1) standard deviation of the values after fill, clip and log, filled
// rows included; a standard deviation of 0 or an undefined one (fewer than
// two rows) is taken as 1, so the column is only centred. Moments are
// merged chunk by chunk (Chan et al.), accurate for large offsets. Without
// a fill, a null in a continuous column is an error. Outputs are float32.
//
// Targets: a binary target with a BinaryTargetMap entry is 1 where the value
// equals one of its positive labels ("|"-separated, e.g. ">50K|>50K.") and
// 0 for any other non-null value; without one, values must be 0/1 (numbers,
// true/false or bools). TargetSource derives a target from another column
// (never_married from marital_status), which must not also be a feature.
// Labels that were neither positive nor seen while fitting are counted in
// Result.UnseenLabels and reported as a warning, since they usually reveal
// a spelling difference between files. Regression targets must be finite
// numbers. A null target is an error. Targets are float32; binary ones
// carry int_domain {0, 1}.
//
// Tags: categorical, continuous, user / item for UserFeatures /
// ItemFeatures, user_id+user+id and item_id+item+id for the ids (added to
// the categorical columns when not listed there),
// binary_classification+target, regression+target. Columns are written in
// the order categorical, continuous, binary targets, regression targets;
// ids as int32, or int64 when the largest id exceeds int32.
//
// # Split
//
// Without eval inputs, SplitStrategy splits the training inputs and the
// workflow is fitted on the train side only. Below, row r is a data row's
// 0-based index counted across the training inputs in order, h(r) =
// splitmix64(seed + (r+1)*0x9E3779B97F4A7C15) with splitmix64 the
// SplitMix64 finaliser, unit(h) = (h >> 11) / 2^53, and a user is the
// canonical string of the user id (a null id counts as ""). Every rule is
// a function of the seed and the input rows, so a run is reproducible.
//
// "random": row r goes to eval when unit(h(r)) < EvalPerc.
//
// "random_by_user" (Merlin's meaning): every user keeps rows on the train
// side, and an EvalPerc share of each user's rows, chosen at random, goes
// to eval. A first pass, reading only the user id column, counts the rows n
// of each user; the user sends e = #{k in 1..n : k/n <= EvalPerc} rows to
// eval (k/n in float64, Merlin's cumulative per-user share), which is
// floor(EvalPerc*n) up to rounding. Since k = n never qualifies, every user
// has a train row, so eval users are in the vocabulary; a user with fewer
// than 1/EvalPerc rows, a single-row user in particular, has e = 0 and is
// on the train side only, as in Merlin's script. Which e rows go to eval is
// decided in input order by selection sampling: a row r of a user with t
// earlier rows, s of them sent to eval, goes to eval when
// floor(h(r) * (n-t) / 2^64) < e-s. Each user thus sends a uniformly
// random e-subset of its rows to eval (Merlin shuffles the rows and sends
// each user's first e). Memory grows with the number of users (a map entry
// and four counters each), not with the number of rows.
//
// "by_user_holdout" (a cold-start split): all rows of a user go to eval
// when unit(splitmix64(fnv1a64(user) ^ splitmix64(seed))) < EvalPerc, so
// about an EvalPerc share of the users is held out. Eval users are unseen
// when fitting and their ids are all out of vocabulary. (This was the
// meaning of "random_by_user" in earlier versions.)
//
// # Output
//
// A transformed dataset is a directory of part_<i>.parquet files (one per
// input file that has rows; Snappy-compressed; one row group per chunk) with
// schema.pbtxt (Merlin's format) and schema.json beside them. It is built
// in a temporary directory next to the target and renamed into place;
// an existing target directory is replaced only when it holds nothing but
// such files, so unrelated files are never deleted. Row order is kept.
//
// Spec.ControlFeatures (--control_features) are written after the encoded
// columns, unchanged and with their nulls: strings as strings, integers as
// int64, floats as float64 (CSV values are text). The schema lists them with
// their dtype and no tags, so no model reads them; a saved workflow applied
// to new data passes them through too, so that data must have them.
//
// # Workflow file
//
// workflow.json is an object with "format" ("mtlrank.preprocess.workflow"),
// "version" (1), "spec" (the Spec, in snake_case), "fit_inputs", "fit_rows",
// and the fitted ops: "categorical" (name, op "categorify" or "hash_bucket",
// freq_threshold, num_buckets, vocab in id order from 2, counts, distinct,
// infrequent_rows, null_rows, tags), "continuous" (name, fill, fill_value,
// clip [min, max] with null for an infinite bound, log, normalize, mean,
// std, count, null_rows, min, max, tags) and "targets" (name, source, kind
// "binary" or "regression", positive, negative_seen, negative_overflow,
// rows, positives, mean, tags). LoadWorkflow rejects other formats, newer
// versions, unknown fields and inconsistent content (a duplicate vocabulary
// value, counts that do not match the vocabulary, an unknown op).
//
// # Errors
//
// Bad data gives an *InputError naming the file, the column and the CSV
// line or Parquet row; inputs without rows give an error wrapping
// ErrEmptyInput; Spec.Validate reports contradictions (a column in two
// roles, a target that is also a feature, EvalPerc outside (0, 1) with a
// split, a per-user split without UserID, ...). Corrupt Parquet files give
// errors, never panics. If the training inputs change between the passes
// of a random_by_user split, Run fails rather than write a split that
// breaks the rule.
//
// # Differences from NVTabular and Merlin's script
//
//   - Id layout: recent NVTabular reserves 0 for padding, 1 for nulls and
//     2.. for out-of-vocabulary buckets before the vocabulary; here 0 is
//     null and 1 out-of-vocabulary, so vocabulary ids start at 2 and
//     embedding tables have vocab+2 rows.
//   - HashBucket hashes with FNV-1a, so hashed ids differ from NVTabular's.
//     Categorify's num_buckets (hashing only the infrequent values next to a
//     vocabulary) is not offered.
//   - The Merlin script normalises only when a fill is given; here Normalize
//     is its own switch. Normalize's formula matches NVTabular's.
//   - LogOp clips at 0 first, so negative inputs give 0 rather than NaN.
//   - Binary targets are mapped to 0/1 float32 (the script passes them
//     through unchanged).
//   - "random" sends each row to eval with probability EvalPerc instead of
//     shuffling and cutting an exact fraction. "random_by_user" sends the
//     same number of rows of each user to eval as Merlin's script, chosen
//     by a seeded draw rather than an unseeded shuffle; the outputs keep
//     the input row order where the script's are shuffled.
//     The "temporal" split, row filters, user/item frequency filters, dtype
//     casts and output_num_partitions are not offered; data without targets
//     (the script's test set) is transformed with TransformWith and
//     SkipTargets.
package preprocess
