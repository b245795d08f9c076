"""Column names and schemas of the records that flow between stages.

A batch is a pandas DataFrame (Ray Data's ``batch_format="pandas"``); every stage maps one to another.

contexts   (stage ``contexts``):   one row per complete teacher sentence
    record_id  str   "<shard>-<passage>-<sentence>", stable across runs
    passage_id str   "<shard>-<passage>"
    prefix     str   domain prefix the passage was sampled from, e.g. "(Reuters) --"
    context    str   the sentences before ``sentence`` in its passage ("" for the first)
    sentence   str   one complete sentence
    seed       int   the sampling seed of the passage (derived, see distill.seeding)

candidates (stage ``candidates``): one row per distinct candidate sentence of a record
    record_id, context, prefix, candidate_idx (int), candidate (str), seed (int), generator (str)

pairs      (stage ``pairs``):      one row per (task, ordered source/target) pair
    pair_id     str  "<record_id>:<task>:<i>-<j>" (i, j candidate_idx)
    record_id   str  the record (context) both candidates continue
    task        str  "paraphrase" | "summary"
    source, target   str
    source_idx, target_idx int
    context     str
    round       int
    generator   str  the model that generated both candidates

critique adds one score column per critic (``<filter>_<metric>``) and ``reject`` (str, "" keeps):
the first failing critic's reason, ``<filter>_<why>``.
"""

TASKS = ("paraphrase", "summary")

CONTEXT_COLUMNS = ["record_id", "passage_id", "prefix", "context", "sentence", "seed"]
CANDIDATE_COLUMNS = ["record_id", "prefix", "context", "candidate_idx", "candidate", "seed", "generator"]
PAIR_COLUMNS = ["pair_id", "record_id", "task", "source", "target", "source_idx", "target_idx", "context", "round",
                "generator"]

REJECT = "reject"  # first failing reason per pair; "" keeps
