"""RegMix: the data mixture of a stage searched with many small proxies trained as one program (docs/regmix.md)."""
