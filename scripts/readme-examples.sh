#!/usr/bin/env bash
# Regenerates the example outputs and figures of README.md: runs the
# commands and rewrites every block between the lines
#   <!-- readme-examples NAME -->   and   <!-- /readme-examples NAME -->
# with what they printed (the marker lines stay). Run it after a change
# that can move a figure, and commit README.md with the change.
#
# Deterministic: fixed seeds, and on the CPU training results depend only
# on the seed (not on the thread count), so a rerun on the same machine
# writes the same README. Another CPU may change the last digits; the
# README names the CPU the figures come from (the "cpu" block).
#
# Usage: scripts/readme-examples.sh [README]   (default README.md)
# Needs Go (it builds mtlrank into a temporary folder) and the system
# packages of `make setup`.
set -euo pipefail
cd "$(dirname "$0")/.."

readme=${1:-README.md}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
blocks=$work/blocks
mkdir -p "$blocks" "$work/bin"
go build -o "$work/bin/mtlrank" ./cmd/mtlrank

# mtlrank runs the binary in $work (so that paths print short), keeping
# stderr (logs) aside and showing it only when the command fails.
mtlrank() {
	if ! (cd "$work" && bin/mtlrank "$@") 2>"$work/stderr"; then
		echo "readme-examples: mtlrank $* failed:" >&2
		cat "$work/stderr" >&2
		exit 1
	fi
}

# auc reads "score label" lines (label 0 or 1) and prints the ROC AUC of
# the scores, ties counting one half (ranks averaged over ties).
auc() {
	sort -g -k1,1 | awk '
		{ s[NR] = $1; y[NR] = $2 }
		END {
			pos = 0; sum = 0
			for (i = 1; i <= NR; i = j + 1) {
				for (j = i; j < NR && s[j + 1] == s[i]; j++) {}
				for (k = i; k <= j; k++) if (y[k] == 1) { pos++; sum += (i + j) / 2 }
			}
			neg = NR - pos
			if (pos == 0 || neg == 0) { print "n/a"; exit }
			printf "%.2f\n", (sum - pos * (pos + 1) / 2) / (pos * neg)
		}'
}

# column prints the values of the named columns of a CSV file with a
# header line, one row per line, separated by spaces.
column() {
	local file=$1
	shift
	awk -F, -v want="$*" '
		NR == 1 { n = split(want, w, " "); for (i = 1; i <= NF; i++) idx[$i] = i
			for (k = 1; k <= n; k++) if (!(w[k] in idx)) { print "no column " w[k] > "/dev/stderr"; exit 1 }
			next }
		{ line = ""; for (k = 1; k <= n; k++) line = line (k > 1 ? " " : "") $(idx[w[k]]); print line }' "$file"
}

# The machine.
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
printf 'The example outputs and the training figures in this README come from\n`scripts/readme-examples.sh`, run on %s (%s CPUs).\n' "${cpu:-an unknown CPU}" "$(nproc)" >"$blocks/cpu"

# A bare `mtlrank train`: the synthetic run.
mtlrank train >"$work/bare"
{
	echo '```'
	echo '$ mtlrank train'
	cat "$work/bare"
	echo '```'
} >"$blocks/bare-train"

# Output heads from zero biases (Merlin) against biases at the base rates
# (the default) on small synthetic sets: 9,000 training rows, 9 steps per
# epoch, as on a small real dataset, and rare tasks of 2-3% positives (about
# 100-150 in each evaluation set, enough for a stable AUC). For the
# held-out rows, the number of training rows of their user and item shows
# what the scores order them by, and where the positives lean.
tasks="click like share follow"
rare="like share follow"
{
	echo '| data seed | `--init_output_bias` | click AUC | like AUC | share AUC | follow AUC | seen users first | seen items first |'
	echo '|---|---|---:|---:|---:|---:|---:|---:|'
} >"$blocks/init-bias"
{
	echo '| data seed | users: click | like | share | follow | items: click | like | share | follow |'
	echo '|---|---:|---:|---:|---:|---:|---:|---:|---:|'
} >"$blocks/init-bias-data"
for seed in 1 2 3; do
	data=d$seed
	mtlrank synth --output_path "$data" --rows 9000 --eval_rows 5000 --random_seed "$seed" --quiet \
		--base_rate_like 0.03 --base_rate_share 0.02 --base_rate_follow 0.02 >/dev/null
	for bias in false true; do
		run=r$seed-$bias
		mtlrank train --train_data_path "$data/train" --eval_data_path "$data/eval" --model mmoe --lr 0.003 --epochs 2 \
			--init_output_bias="$bias" --output_path "$run" --save_model_path "$run/model" --quiet >"$work/train.txt"
		aucs=$(for t in $tasks; do awk -v t="$t/binary_output" '$1 == t { print $2 }' "$work/train.txt"; done | paste -sd' ')
		for part in train eval; do
			mtlrank predict --load_model_path "$run/model" --predict_data_path "$data/$part" --predict_output_path "$run/$part.csv" \
				--predict_output_keep_cols user_id,item_id,click,like,share,follow --quiet >/dev/null
		done
		# The training rows of each held-out row's user and item.
		column "$work/$run/train.csv" user_id item_id >"$work/train-ids"
		column "$work/$run/eval.csv" user_id item_id >"$work/eval-ids"
		awk 'NR == FNR { u[$1]++; i[$2]++; next } { print u[$1] + 0, i[$2] + 0 }' "$work/train-ids" "$work/eval-ids" >"$work/seen"
		seen=""
		for col in 1 2; do
			sum=0
			for t in $rare; do
				a=$(paste -d' ' <(column "$work/$run/eval.csv" "$t/binary_output") "$work/seen" |
					awk -v c="$col" '{ print $1, ($(c + 1) > 0) ? 1 : 0 }' | auc)
				sum=$(awk -v s="$sum" -v a="$a" 'BEGIN { print s + a }')
			done
			seen="$seen | $(awk -v s="$sum" 'BEGIN { printf "%.2f", s / 3 }')"
		done
		echo "| $seed | $bias | $(echo "$aucs" | sed 's/ / | /g')$seen |" >>"$blocks/init-bias"
	done
	# Where the positives lean: the AUC of the training rows of a held-out
	# row's user (item) as a score for its label.
	row="| $seed"
	for col in 1 2; do
		for t in $tasks; do
			row="$row | $(paste -d' ' "$work/seen" <(column "$work/r$seed-true/eval.csv" "$t") | awk -v c="$col" '{ print $c, $3 }' | auc)"
		done
	done
	echo "$row |" >>"$blocks/init-bias-data"
done

# Rewrite the blocks of the README (in place: its mode stays).
tmp=$work/readme
awk -v dir="$blocks" '
	/^<!-- readme-examples [a-z-]+ -->$/ {
		print
		name = $3
		file = dir "/" name
		if ((getline line < file) <= 0) { print "readme-examples: no block " name > "/dev/stderr"; exit 1 }
		print line
		while ((getline line < file) > 0) print line
		close(file)
		skipping = 1
		next
	}
	/^<!-- \/readme-examples [a-z-]+ -->$/ { skipping = 0 }
	!skipping { print }
	END { if (skipping) { print "readme-examples: unterminated block" > "/dev/stderr"; exit 1 } }
' "$readme" >"$tmp"
cat "$tmp" >"$readme"
echo "readme-examples: rewrote $(grep -c '^<!-- readme-examples ' "$readme") blocks of $readme"
