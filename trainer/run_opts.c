/* run_opts.c: the option table of `pgd-trainer run` (for --help, config files and run.conf). */
#include <stddef.h>

#include "trainer/run.h"

#define O(f) offsetof(pgd_run_opts, f)

static const pgd_cfg_opt opts[] = {
    {"connect", PGD_CFG_STRING, O(connect), NULL, 0, 0, NULL,
     "the sampler's consumer endpoint: tcp://HOST:PORT or ipc://PATH", PGD_CFG_REQUIRED},
    {"method", PGD_CFG_ENUM, O(method), "patchgd", 0, 0, "patchgd|gd",
     "patchgd: backbone on patches + head on Z; gd: the classifier on whole images (a 1x1 grid)", 0},
    {"arch", PGD_CFG_STRING, O(arch), "small_cnn", 0, 0, NULL,
     "backbone: resnet18|resnet34|resnet50|mobilenet_v2|small_cnn", 0},
    {"proj", PGD_CFG_INT, O(proj), "256", 1, 65536, NULL, "s: features per patch (PatchGD backbone output)", 0},
    {"classes", PGD_CFG_INT, O(classes), "6", 2, 100000, NULL, "number of classes", 0},
    {"head_width", PGD_CFG_INT, O(head_width), "256", 1, 65536, NULL, "channels of the PatchGD head's convs", 0},
    {"head_pool", PGD_CFG_BOOL, O(head_pool), "no", 0, 0, NULL,
     "the head's convs keep the grid and a global average pool replaces the flatten", 0},
    {"dropout", PGD_CFG_FLOAT, O(dropout), "0.2", 0, 0.95, NULL, "Dropout2d probability in the head", 0},
    {"batch_size", PGD_CFG_INT, O(batch_size), "1", 1, 4096, NULL,
     "images per batch: at least the sampler's batch_size", 0},
    {"max_patches", PGD_CFG_INT, O(max_patches), "0", 0, 1 << 24, NULL,
     "patches per backbone forward (memory); 0: the largest message", 0},
    {"epsilon", PGD_CFG_INT, O(epsilon), "0", 0, 1 << 20, NULL,
     "inner steps accumulated per update; 0: all inner steps of an image batch", 0},
    {"freeze_bn", PGD_CFG_BOOL, O(freeze_bn), "no", 0, 0, NULL,
     "PatchGD: the backbone's batch norm keeps its running statistics (Z-filling and inner steps); gamma and "
     "beta are still trained", 0},
    {"inner_chunk", PGD_CFG_INT, O(inner_chunk), "0", 0, 1 << 24, NULL,
     "PatchGD: patches per backbone forward of an inner step, recomputed for the backward, so memory does not "
     "grow with k (needs freeze_bn); 0: one forward", 0},
    {"fill_mode", PGD_CFG_ENUM, O(fill_mode), "train", 0, 0, "train|eval",
     "batch norm during Z-filling of train streams: batch statistics (as the reference code) or running ones; eval and infer streams always use running ones", 0},
    {"optimizer", PGD_CFG_ENUM, O(optimizer), "adam", 0, 0, "adam|adamw|sgd", "the optimizer", 0},
    {"lr", PGD_CFG_FLOAT, O(lr), "0.001", 0, 10, NULL, "peak learning rate", 0},
    {"weight_decay", PGD_CFG_FLOAT, O(weight_decay), "0", 0, 10, NULL, "weight decay", 0},
    {"momentum", PGD_CFG_FLOAT, O(momentum), "0.9", 0, 1, NULL, "SGD momentum", 0},
    {"epochs", PGD_CFG_INT, O(epochs), "1", 1, 1000000, NULL, "epochs of the stream (for the schedule)", 0},
    {"warmup_epochs", PGD_CFG_INT, O(warmup_epochs), "0", 0, 1000000, NULL,
     "linear warm-up epochs, then linear decay to 0 at the last epoch (needs manifest)", 0},
    {"manifest", PGD_CFG_STRING, O(manifest), NULL, 0, 0, NULL,
     "the sampler's manifest, counted to know batches per epoch (for the schedule)", 0},
    {"drop_last", PGD_CFG_BOOL, O(drop_last), "no", 0, 0, NULL, "the sampler drops a last short batch", 0},
    {"seed", PGD_CFG_INT, O(seed), "0", 0, 9007199254740992.0, NULL, "weights and dropout seed", 0},
    {"threads", PGD_CFG_INT, O(threads), "0", 0, 1024, NULL, "CPU threads (0: all)", 0},
    {"device", PGD_CFG_ENUM, O(device), "cpu", 0, 0, "cpu|cuda", "compute backend (docs/gpu.md)", 0},
    {"gpu", PGD_CFG_INT, O(gpu), "0", 0, 1024, NULL, "CUDA device index", 0},
    {"gpu_mem_gb", PGD_CFG_FLOAT, O(gpu_mem_gb), "0", 0, 1e6, NULL,
     "cap on the CUDA backend's device memory in GiB (0: the device's; also the memory budget when mem_gb is 0)",
     0},
    {"mem_gb", PGD_CFG_FLOAT, O(mem_gb), "0", 0, 1e6, NULL,
     "memory budget in GiB on any backend: max_patches and inner_chunk left at 0 are chosen to fit it, set ones "
     "and GD batches are checked against it (the CPU backend is capped at it; cuda: also the allocator's cap "
     "unless gpu_mem_gb is set); 0: gpu_mem_gb on cuda, else none", 0},
    {"precision", PGD_CFG_ENUM, O(precision), "fp32", 0, 0, "fp32|bf16|fp16",
     "what convs and linear layers compute in: bf16 and fp16 round their operands and multiply-add in fp32 (tensor "
     "cores on a GPU); weights, gradients and optimizer state stay fp32; fp16 trains with dynamic loss scaling "
     "(docs/gpu.md, \"Mixed precision\")", 0},
    {"loss_scale", PGD_CFG_FLOAT, O(loss_scale), "65536", 1, 1e30, NULL,
     "fp16: the first loss scale (halved when a gradient overflows, the update skipped)", 0},
    {"loss_scale_interval", PGD_CFG_INT, O(loss_scale_interval), "2000", 0, 1 << 30, NULL,
     "fp16: updates without overflow before the loss scale doubles; 0: the scale stays fixed", 0},
    {"credit", PGD_CFG_INT, O(credit), "2", 1, 1024, NULL, "BATCH messages asked for ahead", 0},
    {"weights", PGD_CFG_STRING, O(weights), NULL, 0, 0, NULL,
     "safetensors to start from (training) or to evaluate with", 0},
    {"skip", PGD_CFG_STRING, O(skip), NULL, 0, 0, NULL,
     "tensor-name prefix left at its initial value when loading weights (e.g. fc.)", 0},
    {"run_dir", PGD_CFG_STRING, O(run_dir), NULL, 0, 0, NULL,
     "folder for run.conf, metrics.jsonl, model.safetensors, state.safetensors, predictions.csv", 0},
    {"shm", PGD_CFG_ENUM, O(shm), "auto", 0, 0, "auto|yes|no",
     "read pixels from the sampler's shared memory (auto: ipc:// endpoints)", 0},
    {"idle_ms", PGD_CFG_INT, O(idle_ms), "600000", 1, 86400000, NULL, "give up after this long without a message", 0},
    {"log_every", PGD_CFG_INT, O(log_every), "10", 0, 1 << 30, NULL,
     "a progress line every this many image batches (0: per epoch only)", 0},
    {"zstore", PGD_CFG_STRING, O(zstore), NULL, 0, 0, NULL,
     "PatchGD: mirror Z into zstore segment NAME (/dev/shm/pgd.NAME; created, or opened when it exists) at every "
     "image batch end", 0},
    {"zstore_slots", PGD_CFG_INT, O(zstore_slots), "0", 0, 4294967295.0, NULL,
     "slots of a segment the trainer creates; 0: batch_size (train), the manifest's images or 256 (eval, infer)", 0},
    {"zstore_dtype", PGD_CFG_ENUM, O(zstore_dtype), "f32", 0, 0, "f32|f16|bf16",
     "dtype of a segment the trainer creates", 0},
    {"zstore_keep", PGD_CFG_BOOL, O(zstore_keep), "no", 0, 0, NULL,
     "leave the segment the trainer created at exit (then pgd-zstore rm NAME removes it)", 0},
    {"z_export", PGD_CFG_STRING, O(z_export), NULL, 0, 0, NULL,
     "infer: write each slide's Z to DIR/<image_id>.npy (float32 [m, n, s])", 0},
    {"z_heatmap", PGD_CFG_STRING, O(z_heatmap), NULL, 0, 0, NULL,
     "infer: write each slide's Z as a heatmap of per-cell norms to DIR/<image_id>.png", 0},
    {"resume", PGD_CFG_STRING, O(resume), NULL, 0, 0, NULL,
     "continue the training saved in RUN_DIR (model.safetensors + state.safetensors); start the sampler at the "
     "epoch it names", 0},
    {"metrics", PGD_CFG_STRING, O(metrics), NULL, 0, 0, NULL,
     "the metrics file, appended (default RUN_DIR/metrics.jsonl)", 0},
    {"predictions", PGD_CFG_STRING, O(predictions_path), NULL, 0, 0, NULL,
     "infer: the predictions file, appended (default RUN_DIR/predictions.csv)", 0},
    {"report_epoch", PGD_CFG_INT, O(report_epoch), "-1", -1, 1000000, NULL,
     "eval / infer: the epoch their metrics line names (a launcher's validation of a training epoch); -1: the "
     "stream's", 0},
    {"tensorboard", PGD_CFG_STRING, O(tensorboard), NULL, 0, 0, NULL,
     "every metrics line also as TensorBoard scalars PHASE/KEY at step = epoch, appended to DIR/"
     "events.out.tfevents.0.pgd", 0},
    {"best", PGD_CFG_STRING, O(best), NULL, 0, 0, NULL,
     "eval with weights: copy them to DIR/best.safetensors (and DIR/best.json) when the pass's QWK beats "
     "DIR/best.json's", 0},
    {"errors", PGD_CFG_STRING, O(errors), NULL, 0, 0, NULL,
     "infer: the sampler's errors.tsv; at the end of the stream each slide in it gets a status=error row", 0},
    {"progress", PGD_CFG_ENUM, O(progress), "auto", 0, 0, "auto|bar|lines|no",
     "progress on stdout: a bar (auto: when stdout is a terminal) or a line every progress_s seconds", 0},
    {"progress_s", PGD_CFG_INT, O(progress_s), "30", 1, 86400, NULL, "seconds between progress lines", 0},
    {NULL},
};

const pgd_cfg_opt *pgd_run_options(void)
{
    return opts;
}
