"""The feedback loop above the stages: rounds of sample → label → export → reward model → tune → evaluate, run
by people with the public commands or headless with simulated annotators (`vrlhf demo --simulate`), and the report.

Imports flow down only: `loop` uses `labeler`, `reward_model`, `tuner` and `vrlhf`; nothing imports `loop`
except the `vrlhf demo` command.
"""
