"""Every threshold the toolkit decides with, defined once.

The papers give few numeric thresholds (He et al. §3-4 describe the phenomena in words); each constant below names
its source, and ``docs/methods.md`` ("Thresholds and their sources") gives the sentence or figure of a paper it
follows, or, for a toolkit choice, the reason. Train configs, analyses, the regime labels and the report's verdicts
all read them from here, and each output states the values it used.
"""

# -- milestones
SATURATION = 0.99  # training accuracy at saturation, for the findings (He et al. §3: "saturates at about 0.1M"
#                    steps; Fig. 2A's training accuracy first reaches 0.99 at 106k)
SAT_CHECKPOINT = 0.97  # the trainer's t_sat milestone and the `sat` checkpoint (toolkit choice, kept so that runs
#                        and studies written before keep their settings; the findings use SATURATION)
SUSTAIN_EVALS = 3  # a level counts as reached at the first evaluation that starts this many consecutive
#                    evaluations at or above it, or whose 95% interval clears it (toolkit choice: one lucky
#                    evaluation on 72 queries is not a crossing)
MILESTONES = (0.5, 0.9)  # t_id50 / t_id90, t_ood50 / t_ood90, t_bridge50 / t_bridge90 (toolkit choice)
GENERALISED = 0.5  # test accuracy that marks the onset of generalisation (He et al. Fig. 2A: the grokked TRM's OOD
#                    plateau is 0.66-0.70, so onset must lie below it)
GROKKED = 0.9  # a grokked gpt: ID test at least this (Wang et al. §3, Fig. 1: ID test rises to about 1.0)
GROKKED_TRM_OOD = 0.5  # a grokked trm: OOD test at least this (He et al. §4: the natural TRM plateaus at 0.66-0.70)
HIGH = 0.9  # "high" test accuracy for the regime labels' fake-grokking and circuit checks (toolkit choice)
DELAY_FACTOR = 2.0  # natural grokking iff t_gen - t_sat >= DELAY_FACTOR * t_sat (He et al. Fig. 2: natural 2.7x,
#                     second-hop full 2.6x, both-hop full none; the paper says "long after saturation")

# -- the bridge (the Generalization Circuit, He et al. §3)
BRIDGE_CIRCUIT = 0.9  # bridge measure at least this: a circuit (He et al. §3: "every correct prediction ... through
#                       successful recovery of the bridge"; Fig. 2A/B end at 0.998 / 1.000)
BRIDGE_FAKE = 0.5  # bridge measure below this while OOD is up: fake grokking (He et al. §4: "mostly not
#                    recovered", 0.18 over 300-700k in Fig. 2D)
BRIDGE_FORMS_BY = 3.0  # a run's bridge is judged final once it has trained this many times its saturation step
#                        (He et al. Fig. 2, saturation by SATURATION kept: every bridge that formed was >= 0.9 by
#                        2.9 x t_sat, the natural run's 311k vs 106k; both-hop full's 1.0 by 1.5x, 300k vs 200k)
PARENT_MIN_AGE = BRIDGE_FORMS_BY  # a fine-tuning parent is judged circuit / not circuit from this age on (He et
#                                   al.'s parents were 8.2-20 x their saturation step)

# -- same path (Finding 1)
PATH_MIN_LEVEL = 0.5  # a checkpoint "has a bridge path" when its bridge measure peaks at least this (= BRIDGE_FAKE)
SAME_PATH_MARGIN = 0.5  # "same" = every stage's (and cell's) difference within this fraction of the difference a
#                         one-stage move of the path makes (the moved-path control: the measure's resolution)
SAME_PATH_MAX_MARGIN = 0.25  # ... and never more than this (toolkit choice: a quarter of the scale is not "same")
SATURATED_CELL = 0.95  # causal-map cells at least this in both checkpoints are left out (toolkit choice: replacing
#                        the embedding of a token replaces the query, so those cells agree in any two models)
BOOTSTRAP_DRAWS = 2000  # seeded resamples behind every equivalence interval (toolkit choice)
CURVE_SIMILAR = 0.1  # two fine-tuning curves agree when their mean |difference| is within this (toolkit choice: a
#                      sixth of the gap between the paper's composing and failing rows, 1.0 vs 0.31-0.36)

# -- fine-tuning (Finding 3)
NEW_FACT_MILESTONE = 0.99  # the fine-tuning milestone "steps to New Fact accuracy" (He et al. Fig. 3: about 3k)
NEW_FACTS_LEARNED = 0.9  # New Fact accuracy a fine-tune needs before its compositions are judged (toolkit choice;
#                          the paper's control, at 0.956, is judged)
NEW_OLD_COMPOSES = 0.9  # the fine-tuning milestone "steps to new+old exact match >= this" (He et al. Fig. 3A: 1.0)
COMPOSES = 0.75  # a category composes when its exact-match interval lies above this, fails when below: halfway
#                  between full composition (He et al. Fig. 4 rows A-C: 1.0) and a coin flip
BRIDGE_PRESENT = 0.5  # a fine-tune's bridge is found when its interval lies above this, absent when below (toolkit
#                       choice: He et al. Fig. 4 has 0.97-1.0 for found and 0.0-0.06 for absent)
FAITHFUL_MIN_N = 16  # the figures show the powered set where the paper's category has fewer queries than the
#                      paper's smallest (He et al. Fig. 4 rows A/E: n = 16); the verdicts always use the paper's

# -- Wang et al.'s contrast (Finding W: OOD comparison against OOD composition, reporting/contrast.py)
ABOVE_CHANCE = 0.05  # OOD comparison "above chance": its interval above the most frequent label's share plus this
#                      (toolkit choice: a model at chance straddles chance itself, so a rise must be a few points)
#                    "generalised" on a task: above halfway between its chance floor and 1.0 (as COMPOSES)

# The bridge-use measure (docs/methods.md, "Bridge use"): 2 = untrained donors forward, the reverse patch for OOD and
# new hops, the carried patch for the trm. Runs and records measured with an older version show it as not measured.
BRIDGE_USE_VERSION = 2

# Where each gate's threshold comes from, in a few words (the report prints it beside the number; the whole
# argument is in docs/methods.md, "Thresholds and their sources").
SOURCE = {
    "GROKKED": "the family's grokked level (gpt: Wang et al. §3; trm: He et al. §4)",
    "BRIDGE_CIRCUIT": "He et al. §3: every correct answer via the bridge",
    "BRIDGE_FAKE": "He et al. §4: bridge 'mostly not recovered'",
    "COMPOSES": "toolkit: halfway between 1.0 (He et al. Fig. 4) and chance",
    "BRIDGE_PRESENT": "toolkit: He et al. Fig. 4 found 0.97-1.0, absent 0.0-0.06",
    "NEW_FACTS_LEARNED": "toolkit: the new facts are known",
}
