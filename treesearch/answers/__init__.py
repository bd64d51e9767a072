"""Answers: where a solution states one, when two are the same (math-verify in a worker
process), how the finished paths become one, and DeepConf's confidence measures."""
