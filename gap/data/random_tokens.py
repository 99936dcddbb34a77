"""`corpus=random_tokens`: a control sample of uniformly random token ids, so a run can tell what the
ascent does from what the text does. Sample `index` is drawn from a generator seeded by `index`, over the
tokenizer's vocabulary less its special tokens; the same index gives the same ids on every machine."""
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RandomTokens:
    index: int
    length: int

    def token_ids(self, tokenizer) -> list[int]:
        special = set(tokenizer.all_special_ids)
        allowed = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
        generator = torch.Generator().manual_seed(self.index)
        return allowed[torch.randint(len(allowed), (self.length,), generator=generator)].tolist()


def random_token_samples(index: int, num_samples: int, length: int) -> list[RandomTokens]:
    """Samples `index .. index+num_samples-1` of `length` tokens each (the config schema checks the ranges)."""
    return [RandomTokens(i, length) for i in range(index, index + num_samples)]

