"""sde/_fused"""
