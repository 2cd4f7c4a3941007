//! The geometry of Swin's window attention, on the host: the relative position index of a
//! window and the attention mask of shifted windows (`WindowAttention` and
//! `SwinTransformerBlock.__init__` of microsoft/Swin-Transformer), and the tensor reshapes
//! that cut a feature map into windows and put it back.

use burn::prelude::*;

/// For a `window × window` window, the index into the relative position bias table of every
/// (query, key) pair, row-major `[N, N]` with `N = window²`: with `(dy, dx)` the query's
/// position minus the key's, `(dy + window − 1) · (2·window − 1) + (dx + window − 1)`.
pub fn relative_position_index(window: usize) -> Vec<i64> {
    let n = window * window;
    let w = window as i64;
    let mut index = Vec::with_capacity(n * n);
    for q in 0..n {
        for k in 0..n {
            let dy = (q / window) as i64 - (k / window) as i64;
            let dx = (q % window) as i64 - (k % window) as i64;
            index.push((dy + w - 1) * (2 * w - 1) + (dx + w - 1));
        }
    }
    index
}

/// The attention mask of the shifted windows of an `height × width` map (both multiples of
/// `window`), `[windows, N, N]` row-major: 0 where query and key come from the same region of
/// the un-shifted map, −100 where the cyclic shift by `shift` brought them together. Regions
/// are the three bands `[0, h − window)`, `[h − window, h − shift)`, `[h − shift, h)` of each
/// axis, numbered as the official code's `cnt`.
pub fn shift_mask(height: usize, width: usize, window: usize, shift: usize) -> Vec<f32> {
    let band = |v: usize, size: usize| {
        if v < size - window {
            0
        } else if v < size - shift {
            1
        } else {
            2
        }
    };
    let region = |y: usize, x: usize| band(y, height) * 3 + band(x, width);
    let n = window * window;
    let mut mask = Vec::with_capacity(height / window * (width / window) * n * n);
    for wy in 0..height / window {
        for wx in 0..width / window {
            let ids: Vec<usize> = (0..n)
                .map(|i| region(wy * window + i / window, wx * window + i % window))
                .collect();
            for q in 0..n {
                for k in 0..n {
                    mask.push(if ids[q] == ids[k] { 0.0 } else { -100.0 });
                }
            }
        }
    }
    mask
}

/// `[B, H, W, C]` → `[B · windows, window², C]`, windows row-major (`window_partition`).
pub fn partition<B: Backend>(x: Tensor<B, 4>, window: usize) -> Tensor<B, 3> {
    let [b, h, w, c] = x.dims();
    x.reshape([b, h / window, window, w / window, window, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([b * (h / window) * (w / window), window * window, c])
}

/// The inverse of [`partition`] for a `height × width` map (`window_reverse`).
pub fn reverse<B: Backend>(windows: Tensor<B, 3>, window: usize, height: usize, width: usize) -> Tensor<B, 4> {
    let [bw, _, c] = windows.dims();
    let b = bw / (height / window * (width / window));
    windows
        .reshape([b, height / window, width / window, window, window, c])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([b, height, width, c])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn_flex::Flex;

    /// Window 2: positions (0,0) (0,1) (1,0) (1,1); table side 3. By hand: query (0,0) against
    /// key (1,1) is (dy, dx) = (−1, −1) → (0)·3 + 0 = 0; against itself (0, 0) → 1·3 + 1 = 4;
    /// query (1,1) against key (0,0) is (1, 1) → 2·3 + 2 = 8.
    #[test]
    fn the_relative_index_of_a_2x2_window() {
        assert_eq!(
            relative_position_index(2),
            vec![
                4, 3, 1, 0, //
                5, 4, 2, 1, //
                7, 6, 4, 3, //
                8, 7, 5, 4,
            ]
        );
        let seven = relative_position_index(7);
        assert_eq!(seven.len(), 49 * 49);
        assert_eq!(*seven.iter().max().unwrap(), 13 * 13 - 1);
        assert!(seven.iter().enumerate().all(|(i, &v)| (i % 50 != 0) || v == 6 * 13 + 6));
    }

    /// A 4×4 map, window 2, shift 1: bands per axis are [0, 2), [2, 3), [3, 4). The first
    /// window (rows 0–1, columns 0–1) is one region, so nothing is masked; the last (rows 2–3,
    /// columns 2–3) holds four regions (one per position), so only the diagonal is kept.
    #[test]
    fn the_shift_mask_of_a_4x4_map() {
        let mask = shift_mask(4, 4, 2, 1);
        assert_eq!(mask.len(), 4 * 4 * 4);
        assert!(mask[..16].iter().all(|&v| v == 0.0));
        let last = &mask[48..];
        for q in 0..4 {
            for k in 0..4 {
                assert_eq!(last[q * 4 + k], if q == k { 0.0 } else { -100.0 }, "q {q} k {k}");
            }
        }
        // The second window (rows 0–1, columns 2–3): column 2 and column 3 are two regions.
        let second = &mask[16..32];
        let col = |i: usize| i % 2;
        for q in 0..4 {
            for k in 0..4 {
                let same = col(q) == col(k);
                assert_eq!(second[q * 4 + k], if same { 0.0 } else { -100.0 });
            }
        }
    }

    #[test]
    fn partition_and_reverse_are_inverse_and_windows_are_row_major() {
        let device = Default::default();
        let x = Tensor::<Flex, 1, Int>::arange(0..2 * 4 * 6 * 3, &device)
            .float()
            .reshape([2, 4, 6, 3]);
        let windows = partition(x.clone(), 2);
        assert_eq!(windows.dims(), [2 * 2 * 3, 4, 3]);
        // The second window of the first image starts at row 0, column 2: element (0, 2, c).
        let second: Vec<f32> = windows.clone().slice([1..2, 0..1, 0..3]).into_data().to_vec().unwrap();
        assert_eq!(second, vec![6.0, 7.0, 8.0]);
        let back = reverse(windows, 2, 4, 6);
        assert_eq!(
            back.into_data().to_vec::<f32>().unwrap(),
            x.into_data().to_vec::<f32>().unwrap()
        );
    }
}
