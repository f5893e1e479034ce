"""Privacy features that act across the stages: erasing users everywhere (`erasure`), exact
unlearning in saved models (`unlearn`) and federated training (`federated`, fedmf).

The privacy rules that belong to one stage live in it: pseudonymous ids in
`recsight.data.pseudonyms`, the minimum group size in `recsight.analysis.groups`,
differentially private counts in `recsight.analysis.private_counts`, DP-SGD in
`recsight.models.neural.dp` with its accounting in `recsight.models.guarantee`.
"""

#: `recsight analyze --min-group-size` and the dashboard's default (`recsight.analysis.groups`
#: applies it); here so the CLI can show it without importing the analysis stack.
DEFAULT_MIN_GROUP_SIZE = 5
