"""lm-evaluation-harness tasks scored by our engine (`pip install 'gap[lm-eval]'`): `backend` (the harness
`LM` over `gap.scoring`, usable on its own) and `tasks` (loading harness tasks and evaluating them in
`gap.train` / `gap.eval` runs). Imported only where harness tasks are asked for."""
