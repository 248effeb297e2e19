"""Multi-objective reward models: one backbone with K heads, or K separate single-head models,
trained with L = sum_k w_k L_pref,k (Bradley-Terry per objective), evaluated and exported."""
