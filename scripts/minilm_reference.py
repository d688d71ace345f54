#!/usr/bin/env python3
"""Independent numpy forward pass of all-MiniLM-L6-v2 (BERT, mean pooling) for "Hello world":
the reference of tests/encoders.rs. Needs numpy, safetensors, tokenizers and
scripts/fetch-weights.sh run first. Prints the token ids, the unnormalised and the normalised
first six dimensions."""
import numpy as np, math
from safetensors.numpy import load_file
from tokenizers import Tokenizer
import os; d=os.path.join(os.environ.get('LLM_EMF_WEIGHTS', os.path.expanduser('~/.cache/llm-emf-weights')), 'minilm/')
W=load_file(d+'model.safetensors')
tok=Tokenizer.from_file(d+'tokenizer.json'); tok.no_padding()
ids=tok.encode("Hello world").ids; print(ids)
def ln(x,p): 
    mu=x.mean(-1,keepdims=True); v=((x-mu)**2).mean(-1,keepdims=True); return (x-mu)/np.sqrt(v+1e-12)*W[p+'.weight']+W[p+'.bias']
lin=lambda x,p: x@W[p+'.weight'].T+W[p+'.bias']
erf=np.vectorize(math.erf)
gelu=lambda x: 0.5*x*(1+erf(x/math.sqrt(2)))
n=len(ids)
x=W['embeddings.word_embeddings.weight'][ids]+W['embeddings.position_embeddings.weight'][:n]+W['embeddings.token_type_embeddings.weight'][0]
x=ln(x,'embeddings.LayerNorm')
for i in range(6):
    p=f'encoder.layer.{i}.'
    q=lin(x,p+'attention.self.query').reshape(n,12,32).transpose(1,0,2)
    k=lin(x,p+'attention.self.key').reshape(n,12,32).transpose(1,0,2)
    v=lin(x,p+'attention.self.value').reshape(n,12,32).transpose(1,0,2)
    s=q@k.transpose(0,2,1)/math.sqrt(32); s=np.exp(s-s.max(-1,keepdims=True)); s/=s.sum(-1,keepdims=True)
    a=(s@v).transpose(1,0,2).reshape(n,384)
    x=ln(lin(a,p+'attention.output.dense')+x,p+'attention.output.LayerNorm')
    x=ln(lin(gelu(lin(x,p+'intermediate.dense')),p+'output.dense')+x,p+'output.LayerNorm')
m=x.mean(0); print(m[:6]); print((m / np.linalg.norm(m))[:6])
