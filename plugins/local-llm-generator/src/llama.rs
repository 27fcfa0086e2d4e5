//! The llama forward pass for a quantized GGUF model, adapted from candle's
//! `candle_transformers::models::quantized_llama` (candle 0.9.2, MIT OR
//! Apache-2.0, Copyright the candle authors) for a sandbox with little
//! memory and 128-bit SIMD:
//!
//! - Q4_1 matrices are re-quantized to Q8_0 at load (unless
//!   `weights = "as-is"`): candle has no SIMD kernel for Q4_1 on any target,
//!   its Q8_0 dot product has a wasm `simd128` one. The rounding this adds
//!   is a 17th of Q4_1's own step (8-bit vs 4-bit codes per 32 values).
//! - The token embedding table stays quantized and rows are decoded when
//!   looked up: upstream expands it to f32, 113 MiB for SmolLM2's 49,152 x
//!   576 table, in an instance whose memory never shrinks. The same table
//!   is the (tied) output projection.
//! - No per-length mask cache (upstream's grows with every prompt length an
//!   instance sees) and the key/value cache belongs to one generation.
//! - Dense llama only (no mixture of experts).

use candle_core::quantized::{
    ggml_file::qtensor_from_ggml, gguf_file, GgmlDType, QMatMul, QTensor,
};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use half::f16;
use std::io::{Read, Seek};

/// Rows of the rotary tables: positions a generation may reach.
pub const MAX_SEQ_LEN: usize = 4096;

/// How matrices are kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// Q4_1 (and other non-Q8_0 block formats) re-quantized to Q8_0.
    Q8_0,
    /// As stored in the file.
    AsIs,
}

struct Layer {
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    attn_norm: Tensor,
    w1: QMatMul,
    w2: QMatMul,
    w3: QMatMul,
    ffn_norm: Tensor,
}

/// A token embedding table kept in its block format (Q4_1 or Q8_0).
struct Embeddings {
    dtype: GgmlDType,
    data: Vec<u8>,
    dim: usize,
    rows: usize,
}

impl Embeddings {
    fn row_bytes(&self) -> usize {
        self.dim / self.dtype.block_size() * self.dtype.type_size()
    }

    /// The f32 rows of `ids`, as a (1, n, dim) tensor.
    fn lookup(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        let mut out = Vec::with_capacity(ids.len() * self.dim);
        let rb = self.row_bytes();
        for &id in ids {
            let id = id as usize;
            if id >= self.rows {
                candle_core::bail!("token id {id} is outside the vocabulary ({})", self.rows)
            }
            decode_row(self.dtype, &self.data[id * rb..(id + 1) * rb], &mut out)?;
        }
        Tensor::from_vec(out, (1, ids.len(), self.dim), device)
    }
}

/// Appends the f32 values of one row of blocks (Q4_1 or Q8_0 layout, as
/// ggml defines them) to `out`.
fn decode_row(dtype: GgmlDType, bytes: &[u8], out: &mut Vec<f32>) -> Result<()> {
    let h = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
    match dtype {
        GgmlDType::Q4_1 => {
            for b in bytes.chunks_exact(20) {
                let (d, m, qs) = (h(&b[0..2]), h(&b[2..4]), &b[4..20]);
                out.extend(qs.iter().map(|q| d * f32::from(q & 0x0f) + m));
                out.extend(qs.iter().map(|q| d * f32::from(q >> 4) + m));
            }
        }
        GgmlDType::Q8_0 => {
            for b in bytes.chunks_exact(34) {
                let d = h(&b[0..2]);
                out.extend(b[2..34].iter().map(|&q| d * f32::from(q as i8)));
            }
        }
        other => candle_core::bail!("token embeddings in {other:?} are not supported"),
    }
    Ok(())
}

/// `qt` as a matrix for `QMatMul`, re-quantized to Q8_0 if asked.
fn matrix(qt: QTensor, format: WeightFormat) -> Result<QMatMul> {
    let convert = format == WeightFormat::Q8_0
        && !matches!(
            qt.dtype(),
            GgmlDType::Q8_0 | GgmlDType::F32 | GgmlDType::F16
        );
    let qt = if convert {
        QTensor::quantize(&qt.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)?
    } else {
        qt
    };
    QMatMul::from_qtensor(qt)
}

/// The embedding table in the format matrices use, converted by chunks of
/// rows so that the f32 form (113 MiB) never exists whole.
fn embeddings(qt: QTensor, format: WeightFormat) -> Result<Embeddings> {
    let (rows, dim) = qt.shape().dims2()?;
    let dtype = qt.dtype();
    if !matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q8_0) {
        candle_core::bail!("token embeddings in {dtype:?} are not supported (Q4_1 or Q8_0)")
    }
    let data = qt.data()?.into_owned();
    if format == WeightFormat::AsIs || dtype == GgmlDType::Q8_0 {
        return Ok(Embeddings {
            dtype,
            data,
            dim,
            rows,
        });
    }
    let rb = dim / dtype.block_size() * dtype.type_size();
    let mut q8 = Vec::with_capacity(rows * dim / 32 * 34);
    let mut f = Vec::new();
    for chunk in data.chunks(rb * 1024) {
        f.clear();
        decode_row(dtype, chunk, &mut f)?;
        let n = chunk.len() / rb;
        let t = Tensor::from_slice(&f, (n, dim), &Device::Cpu)?;
        q8.extend_from_slice(&QTensor::quantize(&t, GgmlDType::Q8_0)?.data()?);
    }
    Ok(Embeddings {
        dtype: GgmlDType::Q8_0,
        data: q8,
        dim,
        rows,
    })
}

/// The weights of a dense llama model, shared by every generation.
pub struct Weights {
    embeddings: Embeddings,
    output: QMatMul,
    layers: Vec<Layer>,
    norm: Tensor,
    eps: f64,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    cos: Tensor,
    sin: Tensor,
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)
}

impl Weights {
    pub fn from_gguf<R: Read + Seek>(
        ct: &gguf_file::Content,
        r: &mut R,
        format: WeightFormat,
    ) -> Result<Weights> {
        let dev = Device::Cpu;
        let md = |k: &str| match ct.metadata.get(k) {
            Some(v) => Ok(v),
            None => candle_core::bail!("no `{k}` in the metadata"),
        };
        let n_expert = md("llama.expert_count")
            .and_then(|v| v.to_u32())
            .unwrap_or(0);
        if n_expert > 1 {
            candle_core::bail!("mixture-of-experts models are not supported")
        }
        let n_head = md("llama.attention.head_count")?.to_u32()? as usize;
        let n_kv_head = md("llama.attention.head_count_kv")?.to_u32()? as usize;
        let blocks = md("llama.block_count")?.to_u32()? as usize;
        let dim = md("llama.embedding_length")?.to_u32()? as usize;
        let rope_dim = md("llama.rope.dimension_count")?.to_u32()? as usize;
        let eps = f64::from(md("llama.attention.layer_norm_rms_epsilon")?.to_f32()?);
        let base = md("llama.rope.freq_base")
            .and_then(|v| v.to_f32())
            .unwrap_or(10000.0);
        if n_head == 0
            || n_kv_head == 0
            || !n_head.is_multiple_of(n_kv_head)
            || !dim.is_multiple_of(n_head)
        {
            candle_core::bail!("inconsistent head counts {n_head}/{n_kv_head} for width {dim}")
        }

        let theta: Vec<f32> = (0..rope_dim)
            .step_by(2)
            .map(|i| 1f32 / base.powf(i as f32 / rope_dim as f32))
            .collect();
        let theta = Tensor::new(theta.as_slice(), &dev)?;
        let idx = Tensor::arange(0, MAX_SEQ_LEN as u32, &dev)?
            .to_dtype(DType::F32)?
            .reshape((MAX_SEQ_LEN, 1))?
            .matmul(&theta.reshape((1, theta.elem_count()))?)?;
        let (cos, sin) = (idx.cos()?, idx.sin()?);

        let embd = ct.tensor(r, "token_embd.weight", &dev)?;
        let norm = ct.tensor(r, "output_norm.weight", &dev)?.dequantize(&dev)?;
        let output = match ct.tensor_infos.contains_key("output.weight") {
            true => Some(matrix(ct.tensor(r, "output.weight", &dev)?, format)?),
            false => None,
        };
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let mut t = |n: &str| ct.tensor(r, &format!("blk.{i}.{n}.weight"), &dev);
            layers.push(Layer {
                wq: matrix(t("attn_q")?, format)?,
                wk: matrix(t("attn_k")?, format)?,
                wv: matrix(t("attn_v")?, format)?,
                wo: matrix(t("attn_output")?, format)?,
                w1: matrix(t("ffn_gate")?, format)?,
                w2: matrix(t("ffn_down")?, format)?,
                w3: matrix(t("ffn_up")?, format)?,
                attn_norm: t("attn_norm")?.dequantize(&dev)?,
                ffn_norm: t("ffn_norm")?.dequantize(&dev)?,
            });
        }
        let embeddings = embeddings(embd, format)?;
        let output = match output {
            Some(o) => o,
            // Tied: the embedding table (in its converted format) is the output.
            None => QMatMul::from_qtensor(qtensor_from_ggml(
                embeddings.dtype,
                &embeddings.data,
                vec![embeddings.rows, embeddings.dim],
                &dev,
            )?)?,
        };
        Ok(Weights {
            embeddings,
            output,
            layers,
            norm,
            eps,
            n_head,
            n_kv_head,
            head_dim: dim / n_head,
            cos,
            sin,
        })
    }

    pub fn vocab(&self) -> usize {
        self.embeddings.rows
    }
}

/// One generation's state: the key/value cache of every layer.
pub struct Session<'w> {
    w: &'w Weights,
    cache: Vec<Option<(Tensor, Tensor)>>,
    pos: usize,
}

impl<'w> Session<'w> {
    pub fn new(w: &'w Weights) -> Session<'w> {
        Session {
            w,
            cache: (0..w.layers.len()).map(|_| None).collect(),
            pos: 0,
        }
    }

    /// Feeds `ids` (after everything fed before) and returns the logits of
    /// the last one, shape (vocab,).
    pub fn forward(&mut self, ids: &[u32]) -> Result<Tensor> {
        let w = self.w;
        let n = ids.len();
        if n == 0 || self.pos + n > MAX_SEQ_LEN {
            candle_core::bail!(
                "positions {}..{} outside 1..{MAX_SEQ_LEN}",
                self.pos,
                self.pos + n
            )
        }
        let dev = Device::Cpu;
        let mut x = w.embeddings.lookup(ids, &dev)?;
        // Causal mask over (new positions) x (all positions).
        let mask = if n > 1 {
            let (pos, total) = (self.pos, self.pos + n);
            let m: Vec<u8> = (0..n)
                .flat_map(|i| (0..total).map(move |j| u8::from(j > pos + i)))
                .collect();
            Some(Tensor::from_vec(m, (n, total), &dev)?)
        } else {
            None
        };
        let cos = w.cos.narrow(0, self.pos, n)?;
        let sin = w.sin.narrow(0, self.pos, n)?;
        let (nh, nkv, hd) = (w.n_head, w.n_kv_head, w.head_dim);
        for (layer, cache) in w.layers.iter().zip(self.cache.iter_mut()) {
            let h = rms_norm(&x, &layer.attn_norm, w.eps)?;
            let q = layer
                .wq
                .forward(&h)?
                .reshape((1, n, nh, hd))?
                .transpose(1, 2)?;
            let k = layer
                .wk
                .forward(&h)?
                .reshape((1, n, nkv, hd))?
                .transpose(1, 2)?;
            let v = layer
                .wv
                .forward(&h)?
                .reshape((1, n, nkv, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let q = candle_nn::rotary_emb::rope_i(&q.contiguous()?, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_i(&k.contiguous()?, &cos, &sin)?;
            let (k, v) = match cache.take() {
                None => (k, v),
                Some((kc, vc)) => (Tensor::cat(&[&kc, &k], 2)?, Tensor::cat(&[&vc, &v], 2)?),
            };
            *cache = Some((k.clone(), v.clone()));
            let k = candle_transformers::utils::repeat_kv(k, nh / nkv)?;
            let v = candle_transformers::utils::repeat_kv(v, nh / nkv)?;
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
            let att = match &mask {
                None => att,
                Some(m) => {
                    let m = m.broadcast_as(att.shape())?;
                    let neg = Tensor::new(f32::NEG_INFINITY, &dev)?.broadcast_as(att.shape())?;
                    m.where_cond(&neg, &att)?
                }
            };
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att.matmul(&v.contiguous()?)?;
            let y = y.transpose(1, 2)?.reshape((1, n, nh * hd))?;
            let x1 = (layer.wo.forward(&y)? + &x)?;
            let h = rms_norm(&x1, &layer.ffn_norm, w.eps)?;
            let g = candle_nn::ops::silu(&layer.w1.forward(&h)?)?;
            let u = layer.w3.forward(&h)?;
            x = (layer.w2.forward(&(g * u)?)? + x1)?;
        }
        self.pos += n;
        let last = x.i((.., n - 1, ..))?;
        let last = rms_norm(&last, &w.norm, w.eps)?;
        w.output.forward(&last)?.squeeze(0)
    }
}
