cd "$(dirname "$0")"
export PYTHONPATH=../../..:. OMP_NUM_THREADS=1
P=${1:-/tmp/shapes_probe}
nice -n 10 python probe.py $P recipe 0
nice -n 10 python probe.py $P lr4 0 train.base_lr=0.016 train.warmup_lr=0.0016 train.min_lr=0.0016
nice -n 10 python probe.py $P groups8-4 0 model.img_encoder.num_group_tokens=[8,4,0] model.img_encoder.num_output_groups=[8,4]
nice -n 10 python probe.py $P tau2 0 model.img_encoder.gumbel_tau=2.0
nice -n 10 python probe.py $P nocolourwords 0 spec.colour_words=0
nice -n 10 python probe.py $P lr4 1 train.base_lr=0.016 train.warmup_lr=0.0016 train.min_lr=0.0016
nice -n 10 python probe.py $P lr4 2 train.base_lr=0.016 train.warmup_lr=0.0016 train.min_lr=0.0016
nice -n 10 python probe.py $P recipe 1
nice -n 10 python probe.py $P recipe 2
nice -n 10 python probe.py $P lr4-nocolourwords 0 spec.colour_words=0 train.base_lr=0.016 train.warmup_lr=0.0016 train.min_lr=0.0016
